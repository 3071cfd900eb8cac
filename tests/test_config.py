import pytest

from app.config import ConfigError, Settings, load_settings


def test_defaults_work_with_no_file():
    assert load_settings() == Settings()


def test_file_then_flags_override(tmp_path):
    venue = tmp_path / "venue.toml"
    venue.write_text('mode = "toy"\nhop_seconds = 1\nserver = "tcp://10.0.0.2:5555"\n')
    s = load_settings(venue, server="tcp://127.0.0.1:6000", fullscreen=None)
    assert s.mode == "toy" and s.classes == "animals" and s.hop_seconds == 1.0
    assert s.server == "tcp://127.0.0.1:6000" and s.fullscreen is False


def test_mode_defaults():
    assert load_settings(mode="gallery").fullscreen is True
    assert load_settings(mode="performance").hop_seconds == 0.25


def test_the_venue_gate_reaches_the_server_by_name(tmp_path):
    from app.cli import server_settings
    from models.gate import GateSettings
    assert server_settings(load_settings(mode="gallery"))[0] == GateSettings()  # one definition of the defaults
    assert server_settings(load_settings(mode="performance"))[0].hold_seconds == 0.5
    gate, dream = server_settings(load_settings(mode="toy"))
    assert (gate.min_confidence, gate.hold_seconds, dream.intensity) == (0.3, 4.0, 0.7)
    assert dream.blend is None  # no pull back to the seed: it stalls the zoom (BENCHMARKS.md, "Dreams that travel")
    toy = load_settings(mode="toy")
    assert dream.aspect == toy.width / toy.height  # the dream is made on the screen's shape
    venue = tmp_path / "venue.toml"
    venue.write_text('speech = "show"\nfloor_margin_db = 6.0\nenter_windows = 3\n')
    gate, _ = server_settings(load_settings(venue))
    assert (gate.speech, gate.floor_margin_db, gate.enter_windows) == ("show", 6.0, 3)


@pytest.mark.parametrize("text, words", [
    ("mode = \n", ["venue.toml", "TOML"]),
    ("colour = 'red'\n", ["unknown setting", "colour"]),
    ("hop_seconds = 'fast'\n", ["hop_seconds", "float"]),
    ("fullscreen = 1\n", ["fullscreen", "bool"]),
    ("mode = 'disco'\n", ["disco"]),
    ("window_seconds = 2.0\n", ["window_seconds"]),
    ("floor_margin_db = -3\n", ["floor_margin_db", "0: off"]),
    ("speech = 'shout'\n", ["speech", "ignore", "show"]),
])
def test_bad_venue_files_name_the_file_and_the_problem(tmp_path, text, words):
    venue = tmp_path / "venue.toml"
    venue.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(venue)
    assert all(w in str(err.value) for w in words)


def test_missing_venue_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
