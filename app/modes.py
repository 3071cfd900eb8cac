"""What the screen should show, decided from what the server said: listening, showing a class, or server lost.

A pure state machine (no sockets, no GL), so every transition is testable with plain values.
"""
from __future__ import annotations

from dataclasses import dataclass

LISTENING = "listening"
SHOWING = "showing"
SERVER_LOST = "server lost"

LIVE_FRAME_STALE_S = 2.5   # a live frame older than this no longer counts: the fallback takes over


@dataclass
class Scene:
    """One decision: the state, the class on screen (None while listening), and where its pictures come from."""
    state: str
    label: str | None
    confidence: float
    source: str            # "live" (dream frames from the server) or "fallback" (pre-rendered, then seed)
    top: list
    status: str            # a line for the heads-up display


class ShowState:
    def __init__(self, hold_seconds: float = 2.0):
        self.hold_seconds = hold_seconds
        self.state = SERVER_LOST
        self.label: str | None = None
        self.confidence = 0.0
        self.top: list = []
        self.trained = True
        self._label_until = 0.0
        self._last_live_frame = -1e9
        self._live_label: str | None = None
        self.forced: str | None = None  # a performer's class: shown (and dreamt) whatever is heard

    def on_result(self, label: str | None, confidence: float, top: list, trained: bool, now: float) -> None:
        self.top, self.trained = top, trained
        if label is not None:
            if label != self.label and self.forced is None:
                self._live_label = None  # frames of the old class must not show under the new name
            self.label, self.confidence = label, confidence
            self._label_until = now + self.hold_seconds
        elif now >= self._label_until:
            self.label, self.confidence = None, 0.0

    def on_frame(self, label: str, now: float) -> bool:
        """Record a live frame; False if it belongs to a class no longer shown (it is then not displayed)."""
        if label != (self.forced or self.label):
            return False
        self._live_label, self._last_live_frame = label, now
        return True

    def scene(self, server_alive: bool, now: float) -> Scene:
        if self.label is not None and now >= self._label_until:
            self.label, self.confidence = None, 0.0
        label = self.forced or self.label
        confidence = 1.0 if self.forced else self.confidence
        if not server_alive:
            self.state = SERVER_LOST
        elif label is None:
            self.state = LISTENING
        else:
            self.state = SHOWING
        live = (server_alive and label is not None and self._live_label == label
                and now - self._last_live_frame <= LIVE_FRAME_STALE_S)
        status = self.state if server_alive else "server lost: reconnecting"
        if server_alive and not self.trained:
            status = f"UNTRAINED MODEL: {status}"
        return Scene(self.state, label if server_alive else None, confidence if server_alive else 0.0,
                     "live" if live else "fallback", self.top if server_alive else [], status)
