"""Labelled sound clips from disk: ESC-50, UrbanSound8K, or a folder per class (recordings made at a venue).

Every dataset comes out the same way: a `ClipSet` of waveforms at SAMPLE_RATE, an integer label and a fold
per clip, and the class names in label order. Folds are the unit of evaluation: ESC-50 and UrbanSound8K ship
their own (made so that clips cut from one source recording share a fold); a folder dataset gets folds made
here, grouped by source recording when the file names say which recording a clip came from.

Decoding is the slow part on a small machine, so waveforms are kept in memory and also cached as one .npz
per dataset under ~/.cache/hear-and-see (never in the repo). A file that does not decode is skipped, counted
and named in `ClipSet.summary()`; it never ends a run.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.paths import SHARED
from models import audio

log = logging.getLogger(__name__)

DEFAULT_ESC50 = SHARED / "data" / "esc50"
FOLDER_FOLDS = 5  # a folder dataset is cut into this many folds (one is the test set of a run)


def cache_dir() -> Path:
    """Decoded-waveform cache: $HEAR_AND_SEE_CACHE, else ~/.cache/hear-and-see (outside the repo)."""
    return Path(os.environ.get("HEAR_AND_SEE_CACHE", Path.home() / ".cache" / "hear-and-see"))


def esc50_dir() -> Path:
    """Where ESC-50 lives: $HEAR_AND_SEE_ESC50, else ../shared/data/esc50 next to the repo."""
    return Path(os.environ.get("HEAR_AND_SEE_ESC50", DEFAULT_ESC50))


@dataclass
class ClipSet:
    name: str
    class_names: list[str]
    paths: list[str]            # one per decoded clip, same order as everything below
    labels: np.ndarray          # (n,) int64
    folds: np.ndarray           # (n,) int64, 1-based
    groups: list[str]           # source recording of each clip (clips of one group must not straddle a split)
    waveforms: list[np.ndarray]  # float32 mono at SAMPLE_RATE, any length
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of files that did not decode

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> "ClipSet":
        idx = [int(i) for i in idx]
        return ClipSet(self.name, self.class_names, [self.paths[i] for i in idx], self.labels[idx],
                       self.folds[idx], [self.groups[i] for i in idx], [self.waveforms[i] for i in idx],
                       self.skipped)

    def fold_split(self, test_folds) -> tuple["ClipSet", "ClipSet"]:
        """(train, test): the clips of `test_folds` against all the others."""
        test = np.isin(self.folds, list(test_folds))
        return self.subset(np.flatnonzero(~test)), self.subset(np.flatnonzero(test))

    def random_split(self, test_fraction: float = 0.25, seed: int = 0) -> tuple["ClipSet", "ClipSet"]:
        """(train, test) drawn clip by clip, ignoring groups: the *leaky* split, kept to show how much it
        flatters a model (ESC-50's A/B/C takes of one recording land on both sides)."""
        order = np.random.default_rng(seed).permutation(len(self))
        n_test = int(round(test_fraction * len(self)))
        return self.subset(np.sort(order[n_test:])), self.subset(np.sort(order[:n_test]))

    def summary(self) -> str:
        counts = Counter(int(y) for y in self.labels)
        lines = [f"{self.name}: {len(self)} clips, {len(self.class_names)} classes, folds "
                 f"{sorted(set(int(f) for f in self.folds))}, {min(counts.values(), default=0)}-"
                 f"{max(counts.values(), default=0)} clips per class"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s) that did not decode:")
            lines += [f"  {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# layouts: each returns (entries, class_names) with entries = [(path, label, fold, group)], nothing decoded yet

def read_esc50(root: str | Path) -> tuple[list, list[str]]:
    """ESC-50: <root>/esc50.csv (or meta/esc50.csv) with filename,fold,target,category; audio in <root>/audio."""
    root = Path(root)
    meta = next((p for p in (root / "esc50.csv", root / "meta" / "esc50.csv") if p.is_file()), None)
    if meta is None:
        raise FileNotFoundError(f"{root}: no esc50.csv (or meta/esc50.csv); set HEAR_AND_SEE_ESC50 to the "
                                f"ESC-50 folder")
    entries, names = [], {}
    with open(meta, newline="") as f:
        for row in csv.DictReader(f):
            target = int(row["target"])
            names[target] = row["category"]
            # src_file names the freesound recording the clip was cut from; older CSVs lack it, and then
            # the file name's second field is the same thing (1-100032-A-0.flac -> 100032)
            group = row.get("src_file") or row["filename"].split("-")[1]
            entries.append((str(root / "audio" / row["filename"]), target, int(row["fold"]), group))
    return entries, _names_in_label_order(names, meta)


def read_urbansound8k(root: str | Path) -> tuple[list, list[str]]:
    """UrbanSound8K: metadata/UrbanSound8K.csv (slice_file_name,fsID,...,fold,classID,class); audio/foldN/."""
    root = Path(root)
    meta = root / "metadata" / "UrbanSound8K.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{root}: no metadata/UrbanSound8K.csv")
    entries, names = [], {}
    with open(meta, newline="") as f:
        for row in csv.DictReader(f):
            label, fold = int(row["classID"]), int(row["fold"])
            names[label] = row["class"]
            entries.append((str(root / "audio" / f"fold{fold}" / row["slice_file_name"]), label, fold,
                            row["fsID"]))
    return entries, _names_in_label_order(names, meta)


def read_folder(root: str | Path, group_pattern: str | None = None, n_folds: int = FOLDER_FOLDS,
                seed: int = 0) -> tuple[list, list[str]]:
    """<root>/<class name>/*.wav|flac|mp3|ogg, for recordings made at the venue.

    `group_pattern` is a regex whose first group (or whole match) on the file stem names the source
    recording, e.g. r"^(.+)_\\d+$" for "hall-evening_003.wav". With it, whole recordings are dealt to folds,
    so no test clip has a sibling in training. Without it clips are dealt one by one (stratified), which
    leaks when several clips come from one recording: the scores are then optimistic, and we say so.
    """
    root = Path(root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise FileNotFoundError(f"{root}: no class folders (expected <root>/<class>/<files>)")
    names = [d.name for d in class_dirs]
    files = [(p, label) for label, d in enumerate(class_dirs) for p in sorted(d.rglob("*"))
             if p.suffix.lower() in audio.AUDIO_EXTENSIONS]
    if group_pattern is None:
        log.warning("%s: no --group-pattern, so clips are split one by one; clips cut from one recording "
                    "can land in both train and test, and the test score may be optimistic", root)
        groups = [str(p) for p, _ in files]
    else:
        rx = re.compile(group_pattern)
        groups = []
        for p, label in files:
            m = rx.search(p.stem)
            groups.append(f"{label}/{(m.group(1) if m and m.groups() else m.group(0)) if m else p.stem}")
    # deal groups to folds class by class, biggest group first, always into the emptiest fold: balanced
    # folds per class without splitting any group
    size = Counter(groups)
    label_of = {g: label for (_, label), g in zip(files, groups)}
    rng = random.Random(seed)
    fold_of = {}
    for label in range(len(names)):
        gs = [g for g in size if label_of[g] == label]
        rng.shuffle(gs)
        gs.sort(key=lambda g: -size[g])
        load = [0] * n_folds
        for g in gs:
            k = min(range(n_folds), key=lambda i: (load[i], rng.random()))
            fold_of[g], load[k] = k + 1, load[k] + size[g]
    entries = [(str(p), label, fold_of[g], g) for (p, label), g in zip(files, groups)]
    return entries, names


def _names_in_label_order(names: dict, meta: Path) -> list[str]:
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{meta}: class ids are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


def detect_layout(root: str | Path) -> str:
    root = Path(root)
    if (root / "esc50.csv").is_file() or (root / "meta" / "esc50.csv").is_file():
        return "esc50"
    if (root / "metadata" / "UrbanSound8K.csv").is_file():
        return "urbansound8k"
    return "folder"


# ----------------------------------------------------------------------------------------------------------
# decoding, with an in-memory and an on-disk cache

_MEMORY: dict[str, tuple[list[np.ndarray], list[tuple[str, str]]]] = {}


def decode_all(paths: list[str], cache: bool = True, progress: bool = True):
    """Decode `paths` -> (waveforms with None for failures, [(path, reason)] of failures)."""
    key = _cache_key(paths)
    if key in _MEMORY:
        return _MEMORY[key]
    npz = cache_dir() / "waveforms" / f"{key}.npz"
    if cache and npz.is_file():
        try:
            z = np.load(npz, allow_pickle=False)
            flat, offsets, ok = z["audio"], z["offsets"], z["ok"]
            waves = [flat[offsets[i]:offsets[i + 1]] if ok[i] else None for i in range(len(paths))]
            skipped = list(zip(z["skipped_paths"].tolist(), z["skipped_reasons"].tolist()))
            _MEMORY[key] = (waves, skipped)
            return _MEMORY[key]
        except Exception as exc:  # a truncated cache is rebuilt, never trusted
            log.warning("%s: unreadable cache (%s), decoding again", npz, exc)
    waves, skipped = [], []
    it = paths
    if progress:
        from tqdm import tqdm
        it = tqdm(paths, desc="decode", unit="clip", leave=False)
    for p in it:
        try:
            waves.append(audio.load_audio(p))
        except audio.AudioFileError as exc:
            waves.append(None)
            skipped.append((p, str(exc).removeprefix(f"{p}: ")))
    if cache:
        try:
            npz.parent.mkdir(parents=True, exist_ok=True)
            lengths = [0 if w is None else len(w) for w in waves]
            flat = np.concatenate([w for w in waves if w is not None] or [np.zeros(0, np.float32)])
            tmp = npz.with_suffix(".tmp.npz")
            np.savez(tmp, audio=flat, offsets=np.concatenate([[0], np.cumsum(lengths)]),
                     ok=np.array([w is not None for w in waves]),
                     skipped_paths=np.array([p for p, _ in skipped], dtype=str),
                     skipped_reasons=np.array([r for _, r in skipped], dtype=str))
            os.replace(tmp, npz)
        except OSError as exc:
            log.warning("could not write the waveform cache %s: %s", npz, exc)
    _MEMORY[key] = (waves, skipped)
    return _MEMORY[key]


def _cache_key(paths: list[str]) -> str:
    """Changes whenever a file, its size or mtime, or the sample rate changes."""
    h = hashlib.sha1(f"sr={audio.SAMPLE_RATE}".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.path.abspath(p)}|missing\n".encode())
    return h.hexdigest()[:20]


def load_dataset(root: str | Path | None = None, layout: str | None = None, folds=None,
                 group_pattern: str | None = None, max_per_class: int | None = None,
                 cache: bool = True, progress: bool = True) -> ClipSet:
    """Read and decode a dataset. `layout`: esc50 | urbansound8k | folder (detected when None);
    `folds` keeps only those folds; `max_per_class` keeps the first clips of each class in each fold (quick runs)."""
    root = Path(root) if root is not None else esc50_dir()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found (ESC-50: set HEAR_AND_SEE_ESC50)")
    layout = layout or detect_layout(root)
    if layout == "esc50":
        entries, names = read_esc50(root)
    elif layout == "urbansound8k":
        entries, names = read_urbansound8k(root)
    elif layout == "folder":
        entries, names = read_folder(root, group_pattern)
    else:
        raise ValueError(f"unknown layout {layout!r}; use esc50, urbansound8k or folder")
    if folds is not None:
        entries = [e for e in entries if e[2] in set(folds)]
    if max_per_class is not None:
        seen = Counter()  # per class and fold, so a quick run still has every fold
        kept = []
        for e in entries:
            if seen[e[1], e[2]] < max_per_class:
                seen[e[1], e[2]] += 1
                kept.append(e)
        entries = kept
    waves, skipped = decode_all([e[0] for e in entries], cache=cache, progress=progress)
    ok = [i for i, w in enumerate(waves) if w is not None]
    cs = ClipSet(f"{layout}:{root}", names, [entries[i][0] for i in ok],
                 np.array([entries[i][1] for i in ok], dtype=np.int64),
                 np.array([entries[i][2] for i in ok], dtype=np.int64),
                 [entries[i][3] for i in ok], [waves[i] for i in ok], list(skipped))
    for p, why in skipped:
        log.warning("skipped %s: %s", p, why)
    return cs


# ----------------------------------------------------------------------------------------------------------
# windows: how a clip of any length becomes 4 s model inputs

def windows(wave: np.ndarray, hop_seconds: float = 0.5, flush_end: bool = True) -> np.ndarray:
    """(n,) -> (k, N_SAMPLES): 4 s windows every `hop_seconds`, the last one flush with the end, so the whole
    recording is covered (a 5 s ESC-50 clip at hop 0.5 s gives windows at 0, 0.5 and 1 s). A recording
    shorter than 4 s is one zero-padded window. Without `flush_end`, window i starts at i * hop, as the app
    sends a stream's windows to the server."""
    n, w = len(wave), audio.N_SAMPLES
    if n <= w:
        return audio.pad_or_trim(wave[None], w)
    hop = max(1, int(hop_seconds * audio.SAMPLE_RATE))
    starts = list(range(0, n - w + 1, hop))
    if flush_end and starts[-1] != n - w:
        starts.append(n - w)
    return np.stack([wave[s:s + w] for s in starts])
