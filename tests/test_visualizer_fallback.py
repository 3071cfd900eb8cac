"""Which stand-in picture the fallback player serves, and when (no OpenGL needed)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from visualizer import FallbackPlayer, default_frame


def write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(path)


def test_prerendered_frames_play_in_order_at_a_steady_rate(tmp_path):
    for i in range(3):
        write(tmp_path / "out" / "dog" / f"{i:05d}.png", 10 * (i + 1))
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds", fps=4)
    served = [(t, player.frame("dog", t)) for t in np.arange(0, 1.01, 0.05)]
    served = [(round(t, 2), out.image[0, 0, 0], out.source) for t, out in served if out is not None]
    assert served == [(0.0, 10, "prerendered"), (0.25, 20, "prerendered"), (0.5, 30, "prerendered"),
                      (0.75, 10, "prerendered"), (1.0, 20, "prerendered")]


def test_a_late_poll_resumes_the_cadence_instead_of_bursting(tmp_path):
    for i in range(3):
        write(tmp_path / "out" / "dog" / f"{i:05d}.png", 10 * (i + 1))
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds", fps=4)
    assert player.frame("dog", 0.0) is not None
    assert player.frame("dog", 3.0) is not None  # a stall of 3 s
    assert player.frame("dog", 3.1) is None


def test_the_seed_image_is_reshown_where_nothing_was_prerendered(tmp_path):
    write(tmp_path / "seeds" / "cat" / "generated.png", 10)
    write(tmp_path / "seeds" / "cat" / "b.jpg", 90)
    write(tmp_path / "seeds" / "cat" / "a.png", 50)
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds", seed_period_s=6)
    first, source = player.frame("cat", 0.0)
    assert source == "seed" and first[0, 0, 0] == 50
    assert player.frame("cat", 5.9) is None
    # the same picture again, never another: the live dream starts from this one only
    assert [player.frame("cat", t).image[0, 0, 0] for t in (6.0, 12.0, 18.0)] == [50, 50, 50]


def test_a_class_with_no_material_gets_a_bright_generated_pattern(tmp_path):
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds")
    frame, source = player.frame("owl", 0.0)
    assert source == "seed" and frame.shape == (224, 224, 3) and frame.dtype == np.uint8
    assert frame.max(axis=2).min() >= 25
    assert not np.array_equal(frame, default_frame("dog"))


def test_a_new_label_is_served_at_once(tmp_path):
    write(tmp_path / "seeds" / "cat" / "a.png", 50)
    write(tmp_path / "seeds" / "dog" / "a.png", 70)
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds")
    assert player.frame("cat", 0.0).image[0, 0, 0] == 50
    assert player.frame("dog", 0.1).image[0, 0, 0] == 70


def test_attract_mode_drifts_through_every_class_with_material(tmp_path):
    write(tmp_path / "out" / "bird" / "00000.png", 30)
    write(tmp_path / "seeds" / "cat" / "a.png", 50)
    (tmp_path / "seeds" / "empty").mkdir()
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds", attract_dwell_s=10)
    assert player.classes() == ["bird", "cat"]
    seen = [player.frame(None, t) for t in (0.0, 10.0, 20.0)]
    assert [(frame[0, 0, 0], source) for frame, source in seen] == [
        (30, "prerendered"), (50, "seed"), (30, "prerendered")]


def test_each_silence_goes_on_with_the_tour_instead_of_starting_it_again(tmp_path):
    write(tmp_path / "out" / "bird" / "00000.png", 30)
    write(tmp_path / "seeds" / "cat" / "a.png", 50)
    write(tmp_path / "seeds" / "dog" / "a.png", 70)
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds", attract_dwell_s=10)
    shown = []
    for start in (0.0, 4.0, 8.0, 30.0):  # four silences, a sound between each
        shown.append(player.frame(None, start).image[0, 0, 0])
        assert player.frame("owl", start + 1.0) is not None  # heard: a class the tour does not hold
    assert shown == [30, 50, 70, 30]  # bird, cat, dog, then bird again: never the same class twice running
    assert player.frame(None, 40.0).image[0, 0, 0] == 50 and player.frame(None, 50.0).image[0, 0, 0] == 70


def test_the_tour_leaves_out_classes_whose_only_seed_the_network_made(tmp_path):
    write(tmp_path / "seeds" / "wind" / "generated.png", 20)
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds")
    assert player.classes() == ["wind"]  # nothing better anywhere: the generated seed tours
    write(tmp_path / "seeds" / "cat" / "a.png", 50)
    write(tmp_path / "out" / "sea_waves" / "00000.png", 40)  # pre-rendered from a generated seed: a dream, it tours
    write(tmp_path / "seeds" / "sea_waves" / "generated.png", 30)
    assert player.classes() == ["cat", "sea_waves"]
    assert player.frame("wind", 0.0).image[0, 0, 0] == 20  # heard, it is still shown


def test_silence_with_no_material_anywhere_still_has_a_picture(tmp_path):
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds")
    frame, _ = player.frame(None, 0.0)
    assert frame.mean() > 60


def test_frames_added_by_a_running_prerender_are_picked_up_and_broken_ones_skipped(tmp_path):
    folder = tmp_path / "out" / "dog"
    write(folder / "00000.png", 10)
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds", fps=1)
    assert player.frame("dog", 0.0).image[0, 0, 0] == 10
    write(folder / "00001.png", 20)
    (folder / "00002.png").write_bytes(b"\x89PNG half written")
    assert player.frame("dog", 1.0).image[0, 0, 0] == 10  # loop restarts, then sees the new files
    assert player.frame("dog", 2.0).image[0, 0, 0] == 20
    assert player.frame("dog", 3.0) is None  # the broken one
    assert player.frame("dog", 4.0).image[0, 0, 0] == 10


def test_the_tour_includes_taught_sounds_and_a_heard_one_shows_its_picture(tmp_path):
    write(tmp_path / "seeds" / "cat" / "a.png", 50)
    write(tmp_path / "taught" / "flute" / "picture.png", 90)  # laid out as models/taught.py stores a sound
    (tmp_path / "taught" / "flute" / "examples").mkdir()
    (tmp_path / "taught" / "flute" / "manifest.json").write_text("{}")
    (tmp_path / "taught" / "moo" / "examples").mkdir(parents=True)  # taught as a built-in: no picture of its own
    (tmp_path / "taught" / ".teaching-x").mkdir()                   # half-taught: never shown
    write(tmp_path / "taught" / ".teaching-x" / "picture.png", 10)
    player = FallbackPlayer(tmp_path / "out", tmp_path / "seeds", attract_dwell_s=10, taught_dir=tmp_path / "taught")
    assert player.classes() == ["cat", "flute"]
    assert [player.frame(None, t).image[0, 0, 0] for t in (0.0, 10.0)] == [50, 90]
    assert player.frame("cat", 11.0).image[0, 0, 0] == 50 and player.frame("flute", 12.0).image[0, 0, 0] == 90
    assert FallbackPlayer(tmp_path / "out", tmp_path / "seeds").classes() == ["cat"]
