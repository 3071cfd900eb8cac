"""What the people running the show can change while it runs: freeze the picture, force a class, black
out, the dream's intensity, zoom and layer, the HUD; and the one way out of the gallery mode.

`Bindings.on_key` and `Bindings.on_osc` are pure, (state, event) -> new state, so every mapping is
testable with plain values. Keys arrive as pygame's key names ("space", "up", "q") with the modifiers
held, so this module needs no pygame. `OscListener` only receives UDP packets on its own threads and
queues them: the main loop owns the window and applies them between frames.

OSC addresses (no argument toggles a switch; numbers are clamped to their range):
    /hear-and-see/freeze 1      /hear-and-see/blackout 1    /hear-and-see/hud 0
    /hear-and-see/class dog     (a number: the n-th class of the set; "" or 0: back to what is heard)
    /hear-and-see/intensity 0.5 /hear-and-see/zoom 0.1      /hear-and-see/layer blocks.4
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, fields, replace

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer

from models.classes import CLASS_SETS, ESC50_CLASSES, TAUGHT_SET  # plain lists: no torch comes with them

log = logging.getLogger("hear_and_see.controls")

MODIFIERS = ("ctrl", "shift", "alt", "meta")
OSC_PREFIX = "/hear-and-see/"
INTENSITY_STEP = 0.1
ZOOM_STEP = 0.01
# Log-zoom per second. Negative would zoom out past the image's edge; beyond 0.3 a seed image held
# for a few seconds is magnified into a blur.
ZOOM_RANGE = (0.0, 0.3)
OSC_QUEUE_SIZE = 1024  # a flood of packets is dropped, not queued without end


class ControlError(ValueError):
    """A control message that cannot be applied; the text says why, for the log."""


@dataclass(frozen=True)
class Controls:
    zoom: float                     # the renderer's zoom_rate (the venue's zoom_rate to begin with)
    frozen: bool = False            # no new frames are taken and the picture holds still
    forced_label: str | None = None  # shown instead of what is heard
    blackout: bool = False          # a deliberate black screen: the one black the show allows
    intensity: float = 1.0          # the dream's strength, 0..1
    layer: str | None = None        # the dream layer (None: the server's)
    hud: bool = True
    quit: bool = False


def changed(before: Controls, after: Controls) -> dict:
    """The fields that differ, for the log: a show's log should say what the performer did and when."""
    return {f.name: getattr(after, f.name) for f in fields(Controls) if getattr(before, f.name) != getattr(after, f.name)}


@dataclass(frozen=True)
class Chord:
    modifiers: frozenset[str]
    key: str


def parse_chord(text: str) -> Chord:
    """'ctrl+shift+q' -> Chord({'ctrl', 'shift'}, 'q'). At least one modifier: a bare key is one that a
    visitor leaning on the keyboard would press."""
    *modifiers, key = [part.strip().lower() for part in text.split("+")]
    if not key or not modifiers or any(m not in MODIFIERS for m in modifiers):
        raise ValueError(f"exit_chord {text!r} must be modifiers then one key, e.g. 'ctrl+shift+q' "
                         f"(modifiers: {', '.join(MODIFIERS)}; keys as pygame names them)")
    return Chord(frozenset(modifiers), key)


def class_list(spec: str | list[str]) -> tuple[str, ...]:
    """The classes a mode listens for, in the order the number keys pick them ('all': ESC-50's order)."""
    if spec == "all":
        return tuple(ESC50_CLASSES)
    if spec == TAUGHT_SET:
        return ()  # taught sounds come and go while the show runs; a performer forces a built-in class
    return tuple(CLASS_SETS[spec]) if isinstance(spec, str) else tuple(spec)


@dataclass(frozen=True)
class Bindings:
    """Which keys and messages do what, for one mode."""
    mode: str
    classes: tuple[str, ...]
    exit_chord: Chord

    def on_key(self, controls: Controls, key: str, modifiers: frozenset[str] = frozenset()) -> Controls:
        if key == self.exit_chord.key and self.exit_chord.modifiers <= modifiers:
            return replace(controls, quit=True)
        if self.mode in ("gallery", "toy"):  # visitors and children reach the keyboard: nothing else does anything
            return controls
        if key == "escape":
            return replace(controls, quit=True)
        if key == "h":
            return replace(controls, hud=not controls.hud)
        if self.mode != "performance":
            return controls
        key = key.strip("[]")  # keypad keys are named "[1]"; a performer may use either row
        if key == "space":
            return replace(controls, frozen=not controls.frozen)
        if key == "b":
            return replace(controls, blackout=not controls.blackout)
        if len(key) == 1 and key.isdigit():
            return replace(controls, forced_label=self._nth_class(int(key)))
        if key in ("up", "down"):
            step = INTENSITY_STEP if key == "up" else -INTENSITY_STEP
            return replace(controls, intensity=_clamp(round(controls.intensity + step, 2), 0.0, 1.0))
        if key in ("left", "right"):
            step = ZOOM_STEP if key == "right" else -ZOOM_STEP
            return replace(controls, zoom=_clamp(round(controls.zoom + step, 3), *ZOOM_RANGE))
        return controls

    def on_window_close(self, controls: Controls) -> Controls:
        """The window's close button, or alt+F4: in the gallery, visitors can do that too."""
        return controls if self.mode == "gallery" else replace(controls, quit=True)

    def on_osc(self, controls: Controls, address: str, args: tuple) -> Controls:
        """Raises ControlError for an address or argument that means nothing here."""
        name = address[len(OSC_PREFIX):] if address.startswith(OSC_PREFIX) else None
        switches = {"freeze": "frozen", "blackout": "blackout", "hud": "hud"}
        if name in switches:
            field = switches[name]
            value = not getattr(controls, field) if not args else _flag(address, args[0])
            return replace(controls, **{field: value})
        if name == "class":
            return replace(controls, forced_label=self._osc_class(args[0] if args else ""))
        if name == "intensity":
            return replace(controls, intensity=_clamp(_number(address, args), 0.0, 1.0))
        if name == "zoom":
            return replace(controls, zoom=_clamp(_number(address, args), *ZOOM_RANGE))
        if name == "layer":
            return replace(controls, layer=str(args[0]) if args and args[0] != "" else None)
        raise ControlError(f"unknown OSC address {address!r}; known: "
                           f"{', '.join(OSC_PREFIX + n for n in (*switches, 'class', 'intensity', 'zoom', 'layer'))}")

    def _nth_class(self, n: int) -> str | None:
        return self.classes[n - 1] if 0 < n <= len(self.classes) else None

    def _osc_class(self, value) -> str | None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._nth_class(int(value))
        label = str(value).strip()
        if label in ("", "none"):
            return None
        if label not in self.classes:
            raise ControlError(f"/hear-and-see/class {label!r} is not one of this mode's classes: {', '.join(self.classes)}")
        return label


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _flag(address: str, value) -> bool:
    if isinstance(value, (bool, int, float)):
        return bool(value)
    raise ControlError(f"{address} takes 1 or 0, got {value!r}")


def _number(address: str, args: tuple) -> float:
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], (int, float)):
        raise ControlError(f"{address} takes one number, got {list(args)!r}")
    return float(args[0])


class FreezableClock:
    """The renderer's clock. It stops while frozen, so the picture holds still (zoom and fades too),
    and resumes where it stopped, so unfreezing does not jump."""

    def __init__(self):
        self._offset = 0.0
        self._stopped_at: float | None = None

    def __call__(self, now: float, frozen: bool) -> float:
        if frozen and self._stopped_at is None:
            self._stopped_at = now
        elif not frozen and self._stopped_at is not None:
            self._offset += now - self._stopped_at
            self._stopped_at = None
        return (self._stopped_at if frozen else now) - self._offset


class OscListener:
    """OSC over UDP (python-osc, a thread per packet); messages wait in a queue for the main loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9000):
        self._queue: queue.Queue = queue.Queue(OSC_QUEUE_SIZE)
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(self._receive)
        self._server = ThreadingOSCUDPServer((host, port), dispatcher)
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, name="osc", daemon=True)
        self._thread.start()
        log.info("OSC control on udp://%s:%d%s", *self.address,
                 "" if host in ("127.0.0.1", "localhost", "::1") else " (reachable from the network)")

    def _receive(self, address: str, *args) -> None:
        try:
            self._queue.put_nowait((address, args))
        except queue.Full:
            pass

    def pending(self) -> list[tuple[str, tuple]]:
        """Every message that arrived since the last call, oldest first."""
        messages = []
        while True:
            try:
                messages.append(self._queue.get_nowait())
            except queue.Empty:
                return messages

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=1.0)
