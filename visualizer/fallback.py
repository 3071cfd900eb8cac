"""Pictures for when the dream server has none: pre-rendered sequences, seed images, or a pattern.

The installation must never show a black screen, so every class, and silence, always has
something: its pre-rendered frames (out_dir/<class>/00000.png ...) at a steady rate; failing
those, its seed image (the one the live dream starts from), re-shown every few seconds while the
renderer's zoom animates it; failing that, a colour pattern generated from the class name.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from common.paths import IMAGE_SUFFIXES
from common.seeds import GENERATED_NAME, seed_image

log = logging.getLogger(__name__)
_UNSET = object()


class Picture(NamedTuple):
    image: np.ndarray  # H x W x 3 uint8, for Renderer.show_frame
    source: str        # "prerendered" or "seed"


def default_frame(key: str, phase: int = 0, size: int = 224) -> np.ndarray:
    """A smooth colour field, different per `key` and `phase`, never dark.

    A cosine palette with offset 0.5 and amplitude 0.4 keeps every channel within
    [0.1, 0.9], so no pixel can be black whatever the random waves do.
    """
    rng = np.random.default_rng(zlib.crc32(f"{key}:{phase}".encode()))
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.zeros((size, size))
    for _ in range(3):
        angle, freq, shift = rng.uniform(0, np.pi), rng.uniform(1.0, 4.0), rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + shift)
    t = field[..., None] / 6 + rng.random(3)
    rgb = 0.5 + 0.4 * np.cos(2 * np.pi * t)
    return (rgb * 255).round().astype(np.uint8)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_folders(root: Path) -> list[Path]:
    return [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")] if root.is_dir() else []


def _load(path: Path) -> np.ndarray | None:
    """RGB uint8, or None for a file a pre-render job is still writing (or otherwise broken)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        log.warning("skipping unreadable image %s: %s", path, error)
        return None


class FallbackPlayer:
    """Decides which stand-in picture is due, polled once per displayed frame.

    `frame(label, now)` returns a Picture when a new one is due and None otherwise,
    so the render loop stays the only clock. A change of label returns the new material
    at once. `label=None` is attract mode: it drifts through the classes of `classes()`,
    `attract_dwell_s` seconds each, and each silence goes on with the tour where the last one left it (restarted,
    every pause between sounds would show the same first class).
    """

    def __init__(self, prerendered_dir: str | Path, seeds_dir: str | Path, *, fps: float = 4.0,
                 seed_period_s: float = 6.0, attract_dwell_s: float = 20.0, taught_dir: str | Path | None = None):
        self.prerendered_dir = Path(prerendered_dir)
        self.seeds_dir = Path(seeds_dir)
        # a venue's taught sounds (models/taught.py): a folder each, its picture.png beside its examples
        self.taught_dir = Path(taught_dir) if taught_dir is not None else None
        self.fps = fps
        self.seed_period_s = seed_period_s
        self.attract_dwell_s = attract_dwell_s
        self._key: str | None = None
        self._index = 0
        self._due = 0.0
        self._frames: list[Path] = []
        self._label: object = _UNSET
        self._attract_since = 0.0
        self._attract_first = 0                 # the tour's place when this silence began
        self._attract_step: int | None = None   # the tour's place now
        self._attract_classes: list[str] = []

    def classes(self) -> list[str]:
        """The attract tour, in a stable order: the classes with pre-rendered frames or a seed picture of their own,
        and the venue's taught sounds. A class whose only seed the network made itself (GENERATED_NAME, a muddy
        stand-in) is shown when it is heard, but tours only where no class has anything better."""
        pictured = {folder.name for folder in _class_folders(self.prerendered_dir) if _images(folder)}
        if self.taught_dir is not None:
            pictured |= {folder.name for folder in _class_folders(self.taught_dir) if seed_image(folder) is not None}
        generated = set()
        for folder in _class_folders(self.seeds_dir):
            seed = seed_image(folder)
            if seed is not None:
                (generated if seed.name == GENERATED_NAME else pictured).add(folder.name)
        return sorted(pictured or generated)

    def frame(self, label: str | None, now: float) -> Picture | None:
        if label is None and self._label is not None:
            self._attract_first = 0 if self._attract_step is None else self._attract_step + 1
            self._attract_since, self._attract_step = now, None
        self._label = label
        key = label if label is not None else self._attract_class(now)
        if key != self._key:
            self._key, self._index, self._due = key, 0, now
        if now < self._due:
            return None
        return self._next(key, now)

    def _attract_class(self, now: float) -> str:
        step = self._attract_first + int((now - self._attract_since) // self.attract_dwell_s)
        if step != self._attract_step:  # rescanning the folders every frame would cost too much
            self._attract_step, self._attract_classes = step, self.classes()
        if not self._attract_classes:
            return ""  # no class has material: the built-in pattern
        return self._attract_classes[step % len(self._attract_classes)]

    def _next(self, key: str, now: float) -> Picture | None:
        # Re-listed at the start of each loop so frames a pre-render job adds are picked up.
        if self._index == 0 or not self._frames:
            self._frames = _images(self.prerendered_dir / key) if key else []
        index = self._index
        if self._frames:
            index %= len(self._frames)
            path, source, period = self._frames[index], "prerendered", 1 / self.fps
            self._index = (index + 1) % len(self._frames)
        else:
            path = seed_image(self.seeds_dir / key) if key else None
            if path is None and key and self.taught_dir is not None:
                path = seed_image(self.taught_dir / key)
            source, period = "seed", self.seed_period_s
            self._index = index + 1
        # Polls land up to a display frame late; keeping the schedule keeps the rate. After a
        # stall longer than a period, the schedule restarts rather than bursting to catch up.
        self._due += period
        if self._due <= now:
            self._due = now + period
        if path is None:
            return Picture(default_frame(key, phase=index), source)
        rgb = _load(path)
        return None if rgb is None else Picture(rgb, source)
