"""Open-set gating: when to show a class at all.

A closed-set classifier always names one of its classes, even for an empty room or an air conditioner.
Three cheap rules keep the picture from flickering between guesses:
  1. energy: a window quieter than `silence_dbfs` is "listening", whatever the model says;
  2. confidence: a winning class below `min_confidence` is not shown;
  3. hysteresis: a class must win `enter_windows` windows in a row to be shown, and then stays shown for
     `hold_seconds` after its last win (so a dog that barks twice keeps its picture between barks).
  4. room noise (`floor_margin_db`, when set): a window less than that many dB above the quietest window of the
     last `floor_seconds` is background too, and so is the first window, before there is a floor. Measured with
     the fold-4 model, steady white or pink noise above the absolute gate is named "rain" or "crickets" with
     p 0.8-0.95, so neither the absolute gate nor the confidence threshold stops it; this does, at the price
     of also fading out a sound that goes on and on (real rain) once it has lasted `floor_seconds`. The app
     sets it (6 dB) in every mode but performance; BENCHMARKS.md has what it costs in missed events.
Pure Python, no numpy needed: the server calls `update` once per window.
"""
from __future__ import annotations

from collections import deque
from typing import Mapping, Sequence


class OpenSetGate:
    def __init__(self, silence_dbfs: float = -55.0, min_confidence: float = 0.5, enter_windows: int = 2,
                 hold_seconds: float = 3.0, class_names: Sequence[str] | None = None,
                 floor_margin_db: float | None = None, floor_seconds: float = 20.0):
        if enter_windows < 1:
            raise ValueError("enter_windows must be >= 1")
        self.silence_dbfs, self.min_confidence = float(silence_dbfs), float(min_confidence)
        self.enter_windows, self.hold_seconds = int(enter_windows), float(hold_seconds)
        self.class_names = list(class_names) if class_names is not None else None
        self.floor_margin_db, self.floor_seconds = floor_margin_db, float(floor_seconds)
        self.reset()

    def reset(self) -> None:
        self.candidate, self.streak = None, 0  # the class winning the latest windows, and for how many
        self.shown, self.shown_until = None, float("-inf")
        self.history = deque()  # (time, dBFS) of recent windows, for the relative gate

    def _background(self, dbfs: float, now: float) -> bool:
        """True when the window is quiet: under the absolute gate, or (if enabled) near the recent floor."""
        quiet = dbfs < self.silence_dbfs
        if self.floor_margin_db is not None:
            while self.history and self.history[0][0] < now - self.floor_seconds:
                self.history.popleft()
            if not self.history or dbfs < min(d for _, d in self.history) + self.floor_margin_db:
                quiet = True
            self.history.append((now, dbfs))
        return quiet

    def _top(self, probs) -> tuple[object, float]:
        if isinstance(probs, Mapping):
            label = max(probs, key=probs.get)
            return label, float(probs[label])
        probs = list(probs)
        i = max(range(len(probs)), key=probs.__getitem__)
        return (self.class_names[i] if self.class_names is not None else i), float(probs[i])

    def _prob(self, probs, label) -> float:
        if isinstance(probs, Mapping):
            return float(probs.get(label, 0.0))
        probs = list(probs)
        i = self.class_names.index(label) if self.class_names is not None else label
        return float(probs[i])

    def update(self, probs, dbfs: float, now: float) -> tuple[object | None, float]:
        """One window: `probs` (a {label: p} mapping, or a sequence in `class_names` order), its loudness in
        dBFS and the time in seconds. Returns (label to show or None for "listening", confidence): the
        current window's probability of the shown label, or of the top class when nothing is shown (0.0
        when the window is silent)."""
        quiet = self._background(dbfs, now)
        if quiet:
            label, conf = None, 0.0
        else:
            label, conf = self._top(probs)
            if conf < self.min_confidence:
                label = None
        if label is not None and label == self.candidate:
            self.streak += 1
        else:
            self.candidate, self.streak = label, (1 if label is not None else 0)
        if self.candidate is not None and self.streak >= self.enter_windows:
            self.shown, self.shown_until = self.candidate, now + self.hold_seconds
        if self.shown is not None and now >= self.shown_until:
            self.shown = None
        if self.shown is None:
            return None, conf
        return self.shown, (0.0 if quiet else self._prob(probs, self.shown))
