"""The show's controls: key and OSC mappings (pure), the freezable clock, OSC over real UDP, sd_notify."""
from __future__ import annotations

import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pythonosc.udp_client import SimpleUDPClient

from app.config import ConfigError, load_settings
from app.controls import (ZOOM_RANGE, Bindings, Chord, ControlError, Controls, FreezableClock, OscListener, changed,
                          class_list, parse_chord)
from app.config import Settings
from app.run import SystemdNotifier

ZOOM = Settings.zoom_rate

ANIMALS = ("dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow")
CHORD = Chord(frozenset({"ctrl", "shift"}), "q")
CTRL_SHIFT = frozenset({"ctrl", "shift"})


def bindings(mode: str) -> Bindings:
    return Bindings(mode, ANIMALS, CHORD)


def press(mode: str, *keys: str, controls: Controls = Controls(zoom=ZOOM), modifiers: frozenset = frozenset()) -> Controls:
    for key in keys:
        controls = bindings(mode).on_key(controls, key, modifiers)
    return controls


# --- keys ---------------------------------------------------------------------------------------

def test_parse_chord():
    assert parse_chord("ctrl+shift+q") == CHORD
    assert parse_chord(" Ctrl + Alt + F12 ") == Chord(frozenset({"ctrl", "alt"}), "f12")
    for bad in ("q", "ctrl+", "hyper+q", ""):
        with pytest.raises(ValueError, match="exit_chord"):
            parse_chord(bad)


@pytest.mark.parametrize("mode", ["default", "gallery", "toy", "performance"])
def test_the_exit_chord_quits_in_every_mode(mode):
    assert press(mode, "q", modifiers=CTRL_SHIFT).quit
    assert press(mode, "q", modifiers=CTRL_SHIFT | {"alt"}).quit  # an extra modifier held does not matter
    assert not press(mode, "q", modifiers=frozenset({"ctrl"})).quit


@pytest.mark.parametrize("mode", ["gallery", "toy"])
def test_gallery_and_toy_keys_do_nothing_but_the_chord(mode):
    keys = ("escape", "h", "space", "b", "1", "0", "up", "down", "left", "right", "q", "return")
    assert press(mode, *keys) == Controls(zoom=ZOOM)


def test_closing_the_window_quits_except_in_the_gallery():
    assert bindings("performance").on_window_close(Controls(zoom=ZOOM)).quit
    assert not bindings("gallery").on_window_close(Controls(zoom=ZOOM)).quit  # alt+F4 is a key visitors can press


def test_default_has_hud_and_escape_only():
    assert press("default", "h") == Controls(zoom=ZOOM, hud=False)
    assert press("default", "h", "h") == Controls(zoom=ZOOM)
    assert press("default", "space", "b", "1", "up", "right") == Controls(zoom=ZOOM)
    assert press("default", "escape").quit


def test_performance_keys():
    assert press("performance", "space").frozen and not press("performance", "space", "space").frozen
    assert press("performance", "b").blackout and not press("performance", "b", "b").blackout
    assert press("performance", "h") == Controls(zoom=ZOOM, hud=False)
    assert press("performance", "1").forced_label == "dog"
    assert press("performance", "9").forced_label == "sheep"
    assert press("performance", "[2]").forced_label == "rooster"  # the keypad too
    assert press("performance", "3", "0").forced_label is None
    assert press("performance", "down", "down").intensity == 0.8
    assert press("performance", "up").intensity == 1.0  # clamped
    assert press("performance", "right").zoom == pytest.approx(0.06)
    assert press("performance", *["left"] * 10).zoom == ZOOM_RANGE[0]
    assert press("performance", "escape").quit


def test_number_keys_beyond_the_class_set_clear_the_forced_class():
    two = Bindings("performance", ("dog", "cat"), CHORD)
    assert two.on_key(Controls(zoom=ZOOM, forced_label="dog"), "5").forced_label is None


@given(st.lists(st.sampled_from(["space", "b", "h", "up", "down", "left", "right", "0", "1", "9", "[5]", "x",
                                 "escape", "q"]), max_size=40))
def test_any_key_sequence_keeps_values_in_range(keys):
    controls = press("performance", *keys)
    assert 0.0 <= controls.intensity <= 1.0 and ZOOM_RANGE[0] <= controls.zoom <= ZOOM_RANGE[1]
    assert controls.forced_label is None or controls.forced_label in ANIMALS


# --- OSC ----------------------------------------------------------------------------------------

def osc(*messages, controls: Controls = Controls(zoom=ZOOM), mode: str = "performance") -> Controls:
    for address, *args in messages:
        controls = bindings(mode).on_osc(controls, address, tuple(args))
    return controls


def test_osc_addresses():
    assert osc(("/hear-and-see/freeze", 1)).frozen
    assert not osc(("/hear-and-see/freeze", 1), ("/hear-and-see/freeze", 0)).frozen
    assert osc(("/hear-and-see/freeze",)).frozen  # no argument: toggle
    assert osc(("/hear-and-see/blackout", 1.0)).blackout
    assert osc(("/hear-and-see/blackout", True)).blackout
    assert not osc(("/hear-and-see/hud", 0)).hud
    assert osc(("/hear-and-see/class", "cow")).forced_label == "cow"
    assert osc(("/hear-and-see/class", 2)).forced_label == "rooster"
    for clear in (("/hear-and-see/class", ""), ("/hear-and-see/class", "none"), ("/hear-and-see/class", 0),
                  ("/hear-and-see/class",)):
        assert osc(("/hear-and-see/class", "cow"), clear).forced_label is None
    assert osc(("/hear-and-see/intensity", 0.5)).intensity == 0.5
    assert osc(("/hear-and-see/intensity", 7)).intensity == 1.0
    assert osc(("/hear-and-see/zoom", 0.1)).zoom == 0.1
    assert osc(("/hear-and-see/zoom", -1.0)).zoom == ZOOM_RANGE[0]
    assert osc(("/hear-and-see/layer", "blocks.4")).layer == "blocks.4"
    assert osc(("/hear-and-see/layer", "blocks.4"), ("/hear-and-see/layer", "")).layer is None


@pytest.mark.parametrize("message, words", [
    (("/hear-and-see/dance", 1), ["unknown OSC address", "/hear-and-see/freeze"]),
    (("/other/freeze", 1), ["unknown OSC address"]),
    (("/hear-and-see/class", "unicorn"), ["unicorn", "dog"]),
    (("/hear-and-see/intensity", "loud"), ["one number"]),
    (("/hear-and-see/intensity",), ["one number"]),
    (("/hear-and-see/zoom", True), ["one number"]),
    (("/hear-and-see/freeze", "yes"), ["1 or 0"]),
])
def test_bad_osc_messages_say_why(message, words):
    with pytest.raises(ControlError) as error:
        osc(message)
    assert all(w in str(error.value) for w in words)


def test_osc_over_real_udp_reaches_the_main_loop_queue():
    listener = OscListener("127.0.0.1", 0)  # port 0: the system picks a free one
    try:
        host, port = listener.address
        assert host == "127.0.0.1"
        sender = SimpleUDPClient(host, port)
        sender.send_message("/hear-and-see/freeze", 1)
        sender.send_message("/hear-and-see/class", "frog")
        sender.send_message("/hear-and-see/intensity", 0.25)
        messages, deadline = [], time.monotonic() + 5
        while len(messages) < 3 and time.monotonic() < deadline:
            messages += listener.pending()
            time.sleep(0.01)
        # A thread per packet: the order they are queued in is not guaranteed, so none is assumed.
        assert sorted(messages) == [("/hear-and-see/class", ("frog",)), ("/hear-and-see/freeze", (1,)),
                                    ("/hear-and-see/intensity", (0.25,))]
        controls = osc(*[(address, *args) for address, args in messages])
        assert controls == Controls(zoom=ZOOM, frozen=True, forced_label="frog", intensity=0.25)
    finally:
        listener.close()


# --- the clock and the log --------------------------------------------------------------------

def test_freezable_clock_stops_and_resumes_without_a_jump():
    clock = FreezableClock()
    assert clock(10.0, False) == 10.0
    assert clock(11.0, True) == 11.0
    assert clock(15.0, True) == 11.0  # held
    assert clock(16.0, False) == 11.0  # resumes where it stopped
    assert clock(17.0, False) == 12.0


def test_changed_names_what_changed():
    assert changed(Controls(zoom=ZOOM), Controls(zoom=0.1, frozen=True)) == {"frozen": True, "zoom": 0.1}


def test_class_list_follows_the_settings():
    assert class_list("animals") == ANIMALS
    assert class_list("all")[:10] == ANIMALS and len(class_list("all")) == 50
    assert class_list(["cat", "dog"]) == ("cat", "dog")


# --- the modes' settings -------------------------------------------------------------------------

def test_mode_settings():
    gallery, toy, performance = (load_settings(mode=m) for m in ("gallery", "toy", "performance"))
    assert gallery.fullscreen and gallery.hide_cursor and not gallery.show_hud
    assert toy.label_style == "big" and toy.classes == "animals" and toy.hold_seconds >= 3
    assert toy.dream_intensity < 1.0  # gentler than the others
    assert toy.seeds_dir != gallery.seeds_dir and "toy" in toy.seeds_dir  # friendly pictures for children
    assert performance.osc_port and performance.osc_host == "127.0.0.1" and performance.hop_seconds == 0.25
    assert load_settings().osc_port == 0  # no listening socket unless a mode or venue asks for one


@pytest.mark.parametrize("text, words", [
    ("exit_chord = 'q'\n", ["exit_chord", "ctrl+shift+q"]),
    ("label_style = 'huge'\n", ["label_style", "bars"]),
    ("dream_intensity = 2.0\n", ["dream_intensity"]),
    ("dream_blend = 'soft'\n", ["dream_blend"]),
    ("osc_port = 70000\n", ["osc_port"]),
])
def test_bad_control_settings_are_config_errors(tmp_path, text, words):
    venue = tmp_path / "venue.toml"
    venue.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_settings(venue)
    assert all(w in str(error.value) for w in words) and "venue.toml" in str(error.value)


# --- systemd ------------------------------------------------------------------------------------

def test_sd_notify_sends_ready_and_throttled_watchdog_pings(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")
        notifier = SystemdNotifier()
        assert notifier.ping_every == 2.0  # half the watchdog period
        notifier.notify("READY=1")
        notifier.ping(100.0)
        notifier.ping(101.0)  # within the period: not sent
        notifier.ping(102.0)
        assert [receiver.recv(64) for _ in range(3)] == [b"READY=1", b"WATCHDOG=1", b"WATCHDOG=1"]
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            receiver.recv(64)


def test_sd_notify_abstract_socket_and_unset(monkeypatch):
    name = f"hear-and-see-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        SystemdNotifier().notify("WATCHDOG=1")
        assert receiver.recv(64) == b"WATCHDOG=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    SystemdNotifier().notify("READY=1")  # no systemd: nothing happens, nothing fails
