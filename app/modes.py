"""What the screen should show, decided from what the server said and what the performer set.

`step` is the app's every decision in one pure function: the state, this turn's results and frame, the
controls and the time in; the next state and a `Plan` (what to draw, what to ask the server to dream) out. No
sockets, no GL, no clock of its own, so every transition is testable with plain values. The main loop
(app/run.py) only carries it out.

Two decisions are made here and nowhere else:
- which class is on screen and dreamt: a performer's forced class, else what the server last said it hears.
  The server's gate already holds a class for `hold_seconds` after its last win, so it is not held again here.
  The server is told the forced class (`Plan.steering`) and dreams it, or what it hears when there is none:
  it carries this decision out and has no rule of its own.
- whether a live frame may be shown: only one of the class on screen, and only while fresh.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from app.client import Frame, Result
    from app.controls import Controls

STARTING = "starting"        # the server has not answered yet: nothing is lost
LISTENING = "listening"
SHOWING = "showing"
SERVER_LOST = "server lost"

LIVE_FRAME_STALE_S = 2.5   # a live frame older than this no longer counts: the fallback takes over

# Where the next picture comes from (Plan.picture).
LIVE = "live"              # the live frame that arrived this turn
FALLBACK = "fallback"      # the fallback player's (pre-rendered, then seed image), when one is due
KEEP = None                # nothing new: the picture on screen goes on


@dataclass(frozen=True)
class ShowState:
    heard: str | None = None        # the class the server's last result named (None: listening)
    confidence: float = 0.0
    top: tuple = ()
    trained: bool = True
    label: str | None = None        # the class on screen
    live_label: str | None = None   # the class of the newest live frame taken, and when it came
    live_at: float = float("-inf")
    server_seen: bool = False       # the server has answered once: silence from it now is a loss


@dataclass(frozen=True)
class Scene:
    """One decision: the state, the class on screen (None while listening), and where its pictures come from."""
    state: str
    label: str | None
    confidence: float
    source: str            # "live" (dream frames from the server) or "fallback" (pre-rendered, then seed)
    top: list
    status: str            # a line for the heads-up display: what is wrong or overridden ("" when all is well)


@dataclass(frozen=True)
class Steering:
    """What the server is asked to dream (the protocol's STEER): `dream_class` whatever is heard (None: what the
    server hears), at `intensity`, on `layer` (None: the server's)."""
    dream_class: str | None = None
    intensity: float = 1.0
    layer: str | None = None


@dataclass(frozen=True)
class Plan:
    """What the loop draws this turn, and what it asks the server to dream."""
    scene: Scene
    picture: str | None    # LIVE, FALLBACK or KEEP
    zoom: float            # the renderer's zoom rate, taken up with the next keyframe
    frame: Frame | None = None  # the live frame (image, id, label) when picture is LIVE
    blackout: bool = False
    hud: bool = True
    steering: Steering = Steering()


def step(state: ShowState, results: Iterable[Result], frame: Frame | None, controls: Controls, server_alive: bool,
         now: float) -> tuple[ShowState, Plan]:
    """One turn of the show: what the client received this turn (results, and the newest frame or None),
    the controls as they are now, whether the server answers, and the time."""
    for result in results:
        state = replace(state, heard=result.label, confidence=result.confidence, top=tuple(result.top),
                        trained=result.trained)
    if not server_alive:  # a server that comes back starts with an empty gate: what it heard is gone
        state = replace(state, heard=None, confidence=0.0, top=())
    forced = controls.forced_label
    label = forced or state.heard
    if label != state.label:  # a new class: frames of the old one must not come back under its name
        state = replace(state, label=label, live_label=None)
    # Frames of another class (the old one after a change, or what is heard under a forced class) are not shown.
    live_now = frame is not None and frame.label == label
    if live_now:
        state = replace(state, live_label=label, live_at=now)
    fresh = (server_alive and label is not None and state.live_label == label
             and now - state.live_at <= LIVE_FRAME_STALE_S)
    if server_alive:
        state = replace(state, server_seen=True)
        kind = SHOWING if label is not None else LISTENING
    else:
        kind = SERVER_LOST if state.server_seen else STARTING
    # The picture and the name already say that the show is listening or showing; the line is for the rest, so a
    # child's screen carries no stray word (the toy draws the name alone, large).
    status = {SERVER_LOST: "server lost: reconnecting", STARTING: "starting: waiting for the server"}.get(kind, "")
    if server_alive and not state.trained:
        status = "UNTRAINED MODEL" + (f": {status}" if status else "")
    scene = Scene(kind, label, 1.0 if forced else state.confidence, LIVE if fresh else FALLBACK,
                  list(state.top), _with_overrides(status, controls))
    if controls.frozen:  # frames keep arriving (the server keeps its pace), unused
        picture = KEEP
    elif live_now:
        picture = LIVE
    else:
        picture = FALLBACK if scene.source == FALLBACK else KEEP
    return state, Plan(scene, picture, controls.zoom, frame if picture == LIVE else None, controls.blackout,
                       controls.hud, Steering(forced, controls.intensity, controls.layer))


def _with_overrides(status: str, controls: Controls) -> str:
    """The status line says what the performer has overridden."""
    notes = [status] if status else []
    if controls.frozen:
        notes.append("frozen")
    if controls.forced_label is not None:
        notes.append(f"forced {controls.forced_label}")
    if controls.intensity != 1.0:
        notes.append(f"intensity {controls.intensity:.2f}")
    if controls.layer is not None:
        notes.append(f"layer {controls.layer}")
    return " · ".join(notes)
