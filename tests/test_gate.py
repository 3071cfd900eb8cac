"""The open-set gate: silence, AudioSet's background and speech, confidence, and hysteresis."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from models.gate import SPEECH, GateSettings, OpenSetGate

NAMES = ["dog", "cat", "rain"]
DOG, CAT = [0.9, 0.05, 0.05], [0.1, 0.8, 0.1]
UNSURE = [0.4, 0.35, 0.25]


TAG_NAMES = ["Dog", "Bark", "Silence", "Pink noise", "Speech", "Music"]
TAGS_DOG, TAGS_ROOM = [0.8, 0.6, 0.0, 0.1, 0.0, 0.0], [0.05, 0.0, 0.1, 0.5, 0.02, 0.0]
TAGS_TALK = [0.05, 0.0, 0.0, 0.1, 0.7, 0.1]


def gate(**kw):
    return OpenSetGate(GateSettings(**{**dict(silence_dbfs=-50, min_confidence=0.5, enter_windows=2,
                                              sure_confidence=1.0, hold_seconds=2.0), **kw}),
                       class_names=NAMES, tag_names=TAG_NAMES)


def test_silence_is_listening_whatever_the_model_says():
    g = gate(enter_windows=1)
    for t in range(5):
        assert g.update(DOG, -80.0, t * 0.5) == (None, 0.0)


def test_a_class_must_win_enter_windows_in_a_row():
    g = gate(enter_windows=3)
    assert g.update(DOG, -20, 0.0)[0] is None
    assert g.update(DOG, -20, 0.5)[0] is None
    label, conf = g.update(DOG, -20, 1.0)
    assert label == "dog" and conf == 0.9


def test_a_sure_class_enters_at_once_an_unsure_one_after_two_windows():
    """The toy's rule: a sound's first look hears little of it, so an unsure class waits for a second window."""
    toy = GateSettings(enter_windows=2, sure_confidence=0.6)
    g = OpenSetGate(toy, class_names=NAMES)
    unsure = [0.55, 0.25, 0.2]  # dog, but not sure of it
    assert g.update(unsure, -20, 0.0)[0] is None
    assert g.update(unsure, -20, 0.1)[0] == "dog"
    g = OpenSetGate(toy, class_names=NAMES)
    assert g.update(CAT, -20, 0.0) == ("cat", 0.8)  # sure: at once
    assert OpenSetGate(GateSettings(), class_names=NAMES).update(unsure, -20, 0.0)[0] == "dog"  # elsewhere: at once


def test_an_interruption_restarts_the_count():
    g = gate(enter_windows=2)
    assert g.update(DOG, -20, 0.0)[0] is None
    assert g.update(CAT, -20, 0.5)[0] is None
    assert g.update(DOG, -20, 1.0)[0] is None
    assert g.update(DOG, -20, 1.5)[0] == "dog"


def test_low_confidence_is_not_shown_and_reports_its_confidence():
    g = gate(enter_windows=1)
    assert g.update(UNSURE, -20, 0.0) == (None, 0.4)


def test_hold_keeps_the_class_then_releases_it():
    g = gate(enter_windows=2, hold_seconds=2.0)
    g.update(DOG, -20, 0.0)
    assert g.update(DOG, -20, 0.5)[0] == "dog"        # shown until 2.5
    assert g.update(DOG, -80, 1.0) == ("dog", 0.0)    # silence: still held, confidence 0
    assert g.update(UNSURE, -20, 2.0)[0] == "dog"
    assert g.update(UNSURE, -20, 2.5)[0] is None      # hold over


def test_a_new_class_takes_over_once_it_wins_enough():
    g = gate(enter_windows=2, hold_seconds=10.0)
    g.update(DOG, -20, 0.0)
    g.update(DOG, -20, 0.5)
    assert g.update(CAT, -20, 1.0)[0] == "dog"
    assert g.update(CAT, -20, 1.5) == ("cat", 0.8)


def test_mapping_probabilities():
    g = OpenSetGate(GateSettings(enter_windows=1))
    assert g.update({"siren": 0.7, "dog": 0.3}, -10, 0.0) == ("siren", 0.7)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.floats(-90, 0)), max_size=40))
def test_never_shows_a_class_that_has_not_won_enough(events):
    """Whatever happens, a shown label won `enter_windows` loud, confident windows in a row at some point."""
    g = gate(enter_windows=3)
    streak, last, qualified = 0, None, set()
    for i, (k, db) in enumerate(events):
        probs = [0.05, 0.05, 0.05]
        probs[k] = 0.9
        ok = db >= -50
        streak = streak + 1 if ok and k == last else (1 if ok else 0)
        last = k if ok else None
        if streak >= 3:
            qualified.add(NAMES[k])
        label, _ = g.update(probs, db, i * 0.5)
        assert label is None or label in qualified


def test_relative_gate_ignores_steady_noise_but_not_an_event():
    g = gate(enter_windows=2, hold_seconds=1.0, floor_margin_db=6.0, floor_seconds=10.0)
    # steady hiss at -30 dBFS from the start: the model calls it rain, the floor learns it, nothing is shown
    shown = [g.update([0.05, 0.05, 0.9], -30.0, t * 0.5)[0] for t in range(20)]
    assert shown == [None] * 20
    # a quiet room, then a dog 30 dB above it
    g = gate(enter_windows=2, hold_seconds=1.0, floor_margin_db=6.0, floor_seconds=10.0)
    for t in range(10):
        g.update(UNSURE, -60.0, t * 0.5)
    assert [g.update(DOG, -30.0, 5.0 + t * 0.5)[0] for t in range(3)] == [None, "dog", "dog"]


def test_relative_gate_waits_for_a_floor_before_showing_anything():
    g = gate(enter_windows=1, hold_seconds=1.0, floor_margin_db=6.0)
    assert g.update(DOG, -30.0, 0.0)[0] is None  # the first window: no floor to compare with yet
    assert g.update(DOG, -10.0, 0.5)[0] == "dog"  # 20 dB over it


def test_relative_gate_fades_a_sound_that_lasts_longer_than_the_floor_window():
    g = gate(enter_windows=1, hold_seconds=0.5, floor_margin_db=6.0, floor_seconds=5.0)
    g.update(UNSURE, -60.0, 0.0)
    labels = [g.update(DOG, -30.0, 0.5 + t * 0.5)[0] for t in range(20)]  # 10 s of "dog" at one level
    assert labels[0] == "dog" and labels[-1] is None


def test_a_window_audioset_hears_as_background_is_listening_whatever_the_classifier_says():
    g = gate(enter_windows=1)
    assert [g.update(DOG, -30.0, t * 0.5, TAGS_ROOM) for t in range(10)] == [(None, 0.0)] * 10
    assert g.update(DOG, -30.0, 5.0, TAGS_DOG) == ("dog", 0.9)


def test_speech_shows_nothing_unless_the_venue_shows_it():
    assert gate(enter_windows=1).update(CAT, -25.0, 0.0, TAGS_TALK) == (None, 0.0)
    assert gate(enter_windows=1, speech="show").update(CAT, -25.0, 0.0, TAGS_TALK) == (SPEECH, 1.0)


def test_a_sound_that_goes_on_stays_shown_for_as_long_as_it_goes_on():
    """A minute of barking is a minute of dog: nothing learns a steady sound as the room (the floor is off)."""
    g = gate(enter_windows=2, hold_seconds=2.0)
    shown = [g.update(DOG, -25.0, t * 0.5, TAGS_DOG)[0] for t in range(120)]
    assert shown[0] is None and set(shown[1:]) == {"dog"}
    assert [g.update(UNSURE, -25.0, 60.0 + t * 0.5, TAGS_ROOM)[0] for t in range(6)] == ["dog"] * 3 + [None] * 3


def test_a_fresh_gate_shows_a_sound_already_going_on():
    """After a server restart the gate starts fresh, and a bark that never stopped is shown again at once."""
    g = gate(enter_windows=1)
    assert g.update(DOG, -25.0, 0.0, TAGS_DOG)[0] == "dog"


def test_settings_are_checked():
    with pytest.raises(ValueError):
        GateSettings(enter_windows=0)
    with pytest.raises(ValueError):
        GateSettings(speech="shout")
