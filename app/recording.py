"""What a run leaves behind: counts for the caller, and with --output / --frame-log the frames themselves.

A headless run keeps what the window would have shown (`frames/*.png`, twice a second), a contact sheet of
them, and `timeline.json` (labels over time, frames by source, time to first picture and first live frame);
`--frame-log` writes one line per drawn frame (its source, class, mean luminance and the number of the live dream
keyframe on screen), which is how the tests and the robustness benchmark see a black or frozen screen, and how live
keyframes per second are counted in the running app.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from visualizer.window import save_contact_sheet

log = logging.getLogger("hear_and_see.app")

SAVED_FRAMES_PER_SECOND = 2
CONTACT_SHEET_FRAMES = 24
# PNGs are written on a thread of their own: written in the loop, each one stopped the show for 0.1-0.37 s
# twice a second, and the windows due meanwhile went out late (BENCHMARKS.md, "A recording that stalled the show").
# A disk that falls this many frames behind loses frames, not the show's time.
MAX_UNWRITTEN_FRAMES = 4


@dataclass
class RunReport:
    output_dir: Path | None
    frames_drawn: int = 0
    frames_by_source: dict = field(default_factory=dict)
    labels: list = field(default_factory=list)       # (seconds since start, label, confidence)
    first_live_frame_s: float | None = None
    first_image_s: float | None = None

    def summary(self) -> str:
        live = "never" if self.first_live_frame_s is None else f"{self.first_live_frame_s:.1f} s"
        text = (f"drew {self.frames_drawn} frames {self.frames_by_source}; first image after "
                f"{self.first_image_s or 0:.1f} s, first live dream frame after {live}")
        if self.output_dir:
            text += f"\nsaved frames, contact_sheet.png and timeline.json in {self.output_dir}"
        return text


class Recorder:
    def __init__(self, output_dir: str | Path | None, frame_log: str | Path | None):
        self.output = Path(output_dir) if output_dir else None
        if self.output:
            (self.output / "frames").mkdir(parents=True, exist_ok=True)
        self.report = RunReport(self.output)
        self.saved: list[Path] = []
        self.unsaved = 0  # frames due but not saved: the writer was behind, or the disk refused them
        self._next_save = 0.0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-writer") if self.output else None
        self._writing: deque = deque()
        # Line by line: it is read while the show runs (the tests, the robustness benchmark), not only after it.
        self._log = open(frame_log, "w", encoding="utf-8", buffering=1) if frame_log else None
        if self._log:
            self._log.write("seconds\tsource\tclass\tmean_luminance\tkeyframe\n")

    def label(self, seconds: float, label: str | None, confidence: float) -> None:
        self.report.labels.append((round(seconds, 2), label, round(confidence, 3)))

    def first_image(self, seconds: float) -> bool:
        """True the first time: a picture is up."""
        if self.report.first_image_s is not None:
            return False
        self.report.first_image_s = seconds
        return True

    def first_live_frame(self, seconds: float) -> None:
        if self.report.first_live_frame_s is None:
            self.report.first_live_frame_s = seconds
            log.info("first live dream frame after %.1f s", seconds)

    def frame(self, seconds: float, source: str, label: str | None, display, keyframe: int | None = None) -> None:
        """Count a drawn frame; read it back only when it is to be logged or saved. Call before the swap: a
        window's back buffer is undefined after it. `keyframe`: the server's number of the live dream keyframe
        on screen ("-" in the log when the picture is not a live dream)."""
        r = self.report
        r.frames_drawn += 1
        r.frames_by_source[source] = r.frames_by_source.get(source, 0) + 1
        save_now = self.output is not None and seconds >= self._next_save
        if not (self._log or save_now):
            return
        pixels = display.read_pixels()
        if self._log:
            number = "-" if keyframe is None else keyframe
            self._log.write(f"{seconds:.3f}\t{source}\t{label or '-'}\t{pixels.mean():.1f}\t{number}\n")
        if save_now:
            self._next_save += 1.0 / SAVED_FRAMES_PER_SECOND
            self._save(display, pixels)

    def _save(self, display, pixels: np.ndarray) -> None:
        while self._writing and self._writing[0][1].done():
            self._written(*self._writing.popleft())
        if len(self._writing) >= MAX_UNWRITTEN_FRAMES:
            if not self.unsaved:
                log.warning("the frames folder is %d frames behind: frames are skipped until it catches up",
                            MAX_UNWRITTEN_FRAMES)
            self.unsaved += 1
            return
        path = self.output / "frames" / f"{len(self.saved) + len(self._writing):05d}.png"
        self._writing.append((path, self._writer.submit(display.save_png, pixels, path)))

    def _written(self, path: Path, write) -> None:
        try:
            write.result()
            self.saved.append(path)
        except OSError as exc:  # a full disk loses frames; the show and the rest of the run go on
            self.unsaved += 1
            log.error("could not save %s: %s", path, exc)

    def close(self) -> RunReport:
        if self._log:
            self._log.close()
            self._log = None
        if self._writer:
            self._writer.shutdown(wait=True)
            self._writer = None
            while self._writing:
                self._written(*self._writing.popleft())
            if self.unsaved:
                log.warning("%d frames were not saved: the frames folder fell behind", self.unsaved)
        if self.output:
            if self.saved:
                chosen = self.saved[:: max(1, len(self.saved) // CONTACT_SHEET_FRAMES)][:CONTACT_SHEET_FRAMES]
                save_contact_sheet([np.asarray(Image.open(p).convert("RGB")) for p in chosen],
                                   self.output / "contact_sheet.png")
            r = self.report
            (self.output / "timeline.json").write_text(json.dumps(
                {"labels": r.labels, "frames_drawn": r.frames_drawn, "frames_by_source": r.frames_by_source,
                 "first_image_s": r.first_image_s, "first_live_frame_s": r.first_live_frame_s}, indent=1))
        return self.report
