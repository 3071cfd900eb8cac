import pytest

from app.config import ConfigError, Settings, load_settings, server_addresses


def test_defaults_work_with_no_file():
    assert load_settings() == Settings()


def test_file_then_flags_override(tmp_path):
    venue = tmp_path / "venue.toml"
    venue.write_text('mode = "toy"\nhop_seconds = 1\nserver = "tcp://10.0.0.2:5555"\n')
    s = load_settings(venue, server="tcp://127.0.0.1:6000", fullscreen=None)
    assert s.mode == "toy" and s.classes == "animals" and s.hop_seconds == 1.0
    assert s.server == "tcp://127.0.0.1:6000" and s.fullscreen is False
    assert load_settings(venue).server == "tcp://10.0.0.2:5555"  # the venue's server, when no flag names another
    assert load_settings().server == "auto"  # none named: the app starts its own


def test_mode_defaults():
    assert load_settings(mode="gallery").fullscreen is True
    assert load_settings(mode="performance").hop_seconds == 0.25


def test_a_venue_lists_several_servers_and_a_flag_names_others(tmp_path):
    venue = tmp_path / "venue.toml"
    venue.write_text('servers = ["tcp://10.0.0.2:5555", "tcp://10.0.0.3:5555"]\n')
    assert server_addresses(load_settings(venue)) == ("tcp://10.0.0.2:5555", "tcp://10.0.0.3:5555")
    assert server_addresses(load_settings(venue, servers=["tcp://127.0.0.1:7"])) == ("tcp://127.0.0.1:7",)
    assert server_addresses(load_settings(server="tcp://10.0.0.9:1")) == ("tcp://10.0.0.9:1",)
    assert server_addresses(load_settings()) == ()  # none: the app starts its own
    venue.write_text('servers = ["mdns", "tcp://10.0.0.2:5555"]\n')  # those found on the network, and one listed
    assert server_addresses(load_settings(venue)) == ("mdns", "tcp://10.0.0.2:5555")
    assert server_addresses(load_settings(server="mdns")) == ("mdns",)


def test_the_venue_gate_reaches_the_server_by_name(tmp_path):
    from app.config import dream_settings, gate_settings

    def server_settings(settings):
        return gate_settings(settings), dream_settings(settings)
    from models.gate import GateSettings
    assert server_settings(load_settings(mode="gallery"))[0] == GateSettings()  # one definition of the defaults
    assert server_settings(load_settings(mode="performance"))[0].hold_seconds == 0.5
    gate, dream = server_settings(load_settings(mode="toy"))
    assert (gate.min_confidence, gate.taught_confidence, gate.hold_seconds, dream.intensity) == (0.6, 0.3, 4.0, 0.7)
    assert (gate.enter_windows, gate.sure_confidence) == (2, 0.7)  # the right animal a moment later, not a wrong one
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
    ("hop_seconds = 'fast'\n", ["hop_seconds", "'fast'", "a number within 0.05..4"]),
    ("fullscreen = 1\n", ["fullscreen", "true or false"]),
    ("mode = 'disco'\n", ["disco"]),
    ("window_seconds = 2.0\n", ["window_seconds"]),
    ("floor_margin_db = -3\n", ["floor_margin_db", "0: off"]),
    ('palette = "warm"\n', None),  # a palette's name is a palette
    ('palette = "sepia"\n', ["palette", "'sepia'", "neutral, warm, cool, night", "three numbers"]),
    ("palette = [1, 2]\n", ["palette", "three numbers"]),
    ('classes = "bogus"\n', ["classes", "'bogus'", "animals", "a list of class names"]),
    ('classes = ["dog", "unicorn"]\n', ["classes", "unicorn"]),
    ("width = -5\n", ["width", "-5", "within 64..7680"]),
    ("min_confidence = 7\n", ["min_confidence", "7", "within 0..1"]),
    ('server = "bogus"\n', ["server", "'bogus'", "tcp://HOST:PORT"]),
    ('server = "tcp://nohost"\n', ["server", "tcp://HOST:PORT"]),
    ('seeds_dir = "/no/such/folder"\n', ["seeds_dir", "existing folder"]),
    ('osc_host = "everyone"\n', ["osc_host", "IP address"]),
    ("osc_port = 70000\n", ["osc_port", "0..65535"]),
    ("enter_windows = 0\n", ["enter_windows", "1..20"]),
    ("dream_blend = 0\n", ["dream_blend", "above 0"]),
    ("zoom_rate = 2.0\n", ["zoom_rate", "0..0.3"]),
    ('exit_chord = "q"\n', ["exit_chord", "modifiers then one key"]),
    ('label_style = "tiny"\n', ["label_style", "bars, big"]),
    ("hop_seconds = nan\n", ["hop_seconds", "within 0.05..4"]),
    ("speech = 'shout'\n", ["speech", "ignore", "show"]),
])
def test_bad_venue_files_name_the_file_and_the_problem(tmp_path, text, words):
    venue = tmp_path / "venue.toml"
    venue.write_text(text)
    if words is None:
        load_settings(venue)
        return
    with pytest.raises(ConfigError) as err:
        load_settings(venue)
    assert all(w in str(err.value) for w in words), err.value
    assert "\n" not in str(err.value)  # one line


def test_every_setting_has_a_rule_and_its_default_passes_it():
    from dataclasses import fields

    from app.config import RULES, check

    defaults = Settings()
    assert set(RULES) == {f.name for f in fields(Settings)}
    for f in fields(Settings):
        assert check(f.name, getattr(defaults, f.name), "defaults") == getattr(defaults, f.name), f.name


def test_missing_venue_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
