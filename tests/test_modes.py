"""The show's decisions, `app.modes.step`, with plain values: results, frames, controls and time in, the plan out."""
from types import SimpleNamespace

import numpy as np

from app.config import Settings
from app.controls import Controls
from app.modes import FALLBACK, KEEP, LISTENING, LIVE, SERVER_LOST, SHOWING, STARTING, ShowState, Steering, step

ZOOM = Settings.zoom_rate

NOTHING = Controls(zoom=ZOOM)


def result(label, confidence=0.9, top=(), trained=True):
    return SimpleNamespace(label=label, confidence=confidence, top=list(top), trained=trained)


def frame(label, value=1):
    return SimpleNamespace(label=label, image=np.full((4, 4, 3), value, np.uint8))


class Show:
    """Turns of the show, one `turn` per frame the loop draws."""

    def __init__(self):
        self.state = ShowState()

    def turn(self, now, *results, frame=None, controls=NOTHING, alive=True):
        self.state, plan = step(self.state, results, frame, controls, alive, now)
        return plan


def test_starts_then_listens_then_shows_a_class():
    show = Show()
    scene = show.turn(0.0, alive=False).scene
    assert scene.state == STARTING and "lost" not in scene.status  # a server not yet started is not lost
    assert show.turn(0.1).scene.state == LISTENING
    scene = show.turn(1.0, result("dog", 0.9, [["dog", 0.9]])).scene
    assert (scene.state, scene.label, scene.confidence, scene.source, scene.top) == (
        SHOWING, "dog", 0.9, "fallback", [["dog", 0.9]])


def test_the_class_is_what_the_server_says_with_no_hold_of_its_own():
    # The server's gate holds a class for hold_seconds; a second hold here would show it for longer.
    show = Show()
    show.turn(0.0, result("dog"))
    assert show.turn(5.0).scene.label == "dog"  # no new result: what the server last said stands
    assert show.turn(5.1, result(None, 0.0)).scene.state == LISTENING  # the server let go: so does the screen


def test_a_lost_server_forgets_what_it_heard():
    show = Show()
    show.turn(0.0, result("dog"))
    show.turn(0.1, frame=frame("dog"))
    scene = show.turn(0.2, alive=False).scene
    assert (scene.state, scene.label, scene.source, scene.top) == (SERVER_LOST, None, "fallback", [])
    assert "server lost" in scene.status
    assert show.turn(0.3).scene.state == LISTENING  # back, with an empty gate, until its first result


def test_a_live_frame_is_drawn_once_then_kept_while_fresh():
    show = Show()
    show.turn(0.0, result("dog"))
    plan = show.turn(0.1, frame=frame("dog", 7))
    assert plan.picture == LIVE and plan.frame.image[0, 0, 0] == 7 and plan.scene.source == "live"
    plan = show.turn(0.2)
    assert plan.picture == KEEP and plan.scene.source == "live"
    plan = show.turn(0.1 + 3.0)  # stale: the fallback takes over
    assert plan.picture == FALLBACK and plan.scene.source == "fallback"


def test_frames_of_another_class_are_not_drawn():
    show = Show()
    show.turn(0.0, result("dog"))
    plan = show.turn(0.1, frame=frame("cat"))
    assert plan.picture == FALLBACK and plan.frame is None


def test_a_class_change_drops_the_old_class_frames_even_if_it_comes_back():
    show = Show()
    show.turn(0.0, result("dog"))
    show.turn(0.1, frame=frame("dog"))
    assert show.turn(0.2, result("cat")).picture == FALLBACK
    plan = show.turn(0.3, result("dog"))  # dog again within the staleness window: its old frame is gone
    assert plan.picture == FALLBACK and plan.scene.source == "fallback"


def test_an_untrained_model_is_labelled_on_screen():
    show = Show()
    assert show.turn(0.0, result("dog", trained=False)).scene.status.startswith("UNTRAINED MODEL")


def test_a_forced_class_is_shown_and_takes_its_own_live_frames():
    show, cow = Show(), Controls(zoom=ZOOM, forced_label="cow")
    show.turn(0.0, result("dog", 0.8, [["dog", 0.8]]))
    plan = show.turn(0.1, frame=frame("dog"), controls=cow)
    assert plan.picture == FALLBACK  # frames of what is heard no longer show
    assert (plan.scene.label, plan.scene.confidence, plan.scene.top) == ("cow", 1.0, [["dog", 0.8]])
    assert plan.scene.status == "forced cow"
    assert show.turn(0.2, frame=frame("cow"), controls=cow).picture == LIVE
    plan = show.turn(0.3, result("cat"), controls=cow)  # what is heard changes underneath
    assert plan.scene.source == "live" and plan.picture == KEEP
    assert show.turn(0.4).scene.label == "cat"  # released: back to what is heard


def test_a_forced_class_stays_while_the_server_is_away():
    show = Show()
    show.turn(0.0)
    scene = show.turn(0.1, controls=Controls(zoom=ZOOM, forced_label="cow"), alive=False).scene
    assert (scene.state, scene.label, scene.confidence, scene.source) == (SERVER_LOST, "cow", 1.0, "fallback")
    assert scene.status == "server lost: reconnecting · forced cow"


def test_the_server_is_asked_to_dream_the_class_on_screen_only_when_it_is_forced():
    show = Show()
    assert show.turn(0.0, result("dog")).steering == Steering()  # what is heard: the server's gate knows it first
    stage = Controls(zoom=ZOOM, forced_label="cow", intensity=0.5, layer="blocks.4")
    plan = show.turn(0.1, result("cat"), controls=stage)
    assert plan.steering == Steering("cow", 0.5, "blocks.4") and plan.scene.label == "cow"
    assert show.turn(0.2, controls=stage, alive=False).steering.dream_class == "cow"  # kept for the next server
    plan = show.turn(0.3, controls=Controls(zoom=ZOOM, intensity=0.5))
    assert plan.steering == Steering(None, 0.5, None) and plan.scene.label is None  # released: what is heard


def test_frozen_takes_no_picture_but_keeps_count_of_frames():
    show, frozen = Show(), Controls(zoom=ZOOM, frozen=True)
    show.turn(0.0, result("dog"))
    plan = show.turn(0.1, frame=frame("dog"), controls=frozen)
    assert plan.picture == KEEP and plan.frame is None
    assert plan.scene.source == "live"  # the frame arrived; unfreezing does not fall back
    assert show.turn(3.0, controls=frozen).picture == KEEP  # stale, but nothing new while frozen
    assert show.turn(3.1).picture == FALLBACK


def test_the_plan_carries_the_controls_the_renderer_needs():
    controls = Controls(zoom=0.12, blackout=True, hud=False)
    plan = Show().turn(0.0, controls=controls)
    assert (plan.blackout, plan.hud, plan.zoom) == (True, False, 0.12)


def test_the_status_line_says_what_is_overridden():
    show = Show()
    show.turn(0.0, result("dog"))
    assert show.turn(0.1).scene.status == ""  # all is well: nothing to say over the picture
    status = show.turn(0.2, controls=Controls(zoom=ZOOM, frozen=True, intensity=0.5, layer="blocks.4")).scene.status
    assert status == "frozen · intensity 0.50 · layer blocks.4"
