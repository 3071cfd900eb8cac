"""The three ways the window is used, end to end: the real app (`hear-and-see run`) in a real window on
Xvfb, keys pressed through the X server (XTEST), screenshots read back from the X server, OSC over UDP.

A small fake inference server (the real wire protocol, no model) stands in for the real one: it hears
`label` continuously and streams solid-colour frames whose hue keeps turning, so a picture that stops
changing is the app's doing, and a picture that is not a solid colour is a seed image.
"""
from __future__ import annotations

import colorsys
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import zmq
from pythonosc.udp_client import SimpleUDPClient

from common import protocol
from tests.conftest import REPO_ROOT, SCREEN, XServer, free_tcp_address

STARTUP_S = 60.0  # a loaded 2-core machine: imports and the first GL context can take a while


class FakeServer:
    """The wire protocol's server side with no model: hears `label`, streams frames of a turning hue, and keeps
    the STEER messages it is sent."""

    def __init__(self, label: str | None):
        self.label = label
        self.steered: list[dict] = []
        self.frames_sent = 0
        self.address = free_tcp_address()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        context = zmq.Context()
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(self.address)
        clients, frame_id, next_frame = set(), 0, 0.0
        try:
            while not self._stop.is_set():
                if router.poll(20):
                    identity, *parts = router.recv_multipart()
                    header, _ = protocol.decode(parts)
                    clients.add(identity)
                    if header["kind"] in (protocol.HELLO, protocol.PING):
                        router.send_multipart([identity, *protocol.encode(protocol.PONG, t=header.get("t"))])
                    elif header["kind"] == protocol.STEER:
                        self.steered.append({k: header.get(k) for k in ("class", "intensity", "layer")})
                now = time.monotonic()
                if now < next_frame:
                    continue
                next_frame = now + 0.1
                frame_id += 1
                rgb = np.array(colorsys.hsv_to_rgb(now / 3.0 % 1.0, 1.0, 1.0)) * 255
                image = np.broadcast_to(rgb.astype(np.uint8), (64, 64, 3))
                for identity in clients:
                    router.send_multipart([identity, *protocol.encode(
                        protocol.RESULT, id=None, label=self.label, confidence=0.9 if self.label else 0.0,
                        top=[[self.label or "dog", 0.9]], dbfs=-20.0, trained=True, ms=1.0)])
                    if self.label is not None:
                        router.send_multipart([identity, *protocol.encode(
                            protocol.FRAME, image, id=frame_id, label=self.label, source="live")])
                        self.frames_sent += 1
        finally:
            router.close()
            context.term()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class App:
    """`hear-and-see run` in a window on the X server, its log and frame log in files the test reads."""

    def __init__(self, x: XServer, tmp: Path, mode: str, server: FakeServer, venue: dict):
        self.x, self.log_path, self.frames_path = x, tmp / f"{mode}.log", tmp / f"{mode}.tsv"
        self.server = server
        silence = tmp / "silence.wav"
        with wave.open(str(silence), "wb") as w:  # something to "hear", so no microphone is looked for
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(bytes(32000))
        empty = tmp / "no_prerendered"  # seed images only, whatever a checkout has pre-rendered
        empty.mkdir(exist_ok=True)
        venue = {"width": SCREEN[0], "height": SCREEN[1], "vignette": 0.0, "prerendered_dir": str(empty), **venue}
        config = tmp / f"{mode}.toml"
        config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in venue.items()))
        self.log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run", "--mode", mode, "--config", str(config), "--server",
             server.address, "--input", str(silence), "--frame-log", str(self.frames_path)],
            cwd=REPO_ROOT, env=x.env(), stdout=self.log_file, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def frames(self) -> list[list[str]]:
        """The frame log's rows: seconds, source, class, mean luminance (the last one may be half-written)."""
        lines = self.frames_path.read_text().splitlines()[1:] if self.frames_path.exists() else []
        return [line.split("\t") for line in lines[:-1]]

    def wait_for(self, what: str, condition, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the app exited ({self.process.returncode}) waiting for {what}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def do(self, action, logged: str) -> None:
        """Do `action`, then wait until the app logs `logged` once more (the change is applied) and has
        drawn a few more frames (it is on screen)."""
        count = self.log().count(logged)
        action()
        self.wait_for(logged, lambda: self.log().count(logged) > count)
        self.settle()

    def press(self, *keysyms: str, logged: str) -> None:
        self.do(lambda: self.x.press(*keysyms), logged)

    def settle(self, frames: int = 3) -> None:
        """Until `frames` more frames have been drawn: what the log says has been applied is on screen."""
        drawn = len(self.frames())
        self.wait_for(f"{frames} frames", lambda: len(self.frames()) >= drawn + frames)

    def changing(self, timeout: float = 20.0) -> bool:
        """Whether the picture on screen changes within `timeout` (it returns as soon as it does)."""
        first, deadline = self.x.screenshot(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not np.array_equal(first, self.x.screenshot()):
                return True
            self.settle(1)
        return False

    def frames_come_in(self, count: int = 3) -> None:
        """Until the server has sent `count` more frames and the app has drawn a few since: what would change
        the picture has arrived."""
        sent = self.server.frames_sent
        self.wait_for(f"{count} more frames from the server", lambda: self.server.frames_sent >= sent + count)
        self.settle()

    def finish(self, timeout: float = 20.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


@pytest.fixture
def launch(x_server, tmp_path):
    started = []

    def launch(mode: str, label: str | None, **venue) -> App:
        server = FakeServer(label)
        app = App(x_server, tmp_path, mode, server, venue)
        started.append((app, server))
        return app

    yield launch
    for app, server in started:
        app.close()
        server.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def white_pixels(image: np.ndarray) -> int:
    return int((image.min(axis=2) > 235).sum())


def solid(image: np.ndarray) -> bool:
    return float(image.reshape(-1, 3).std(axis=0).max()) < 4.0


def test_performance_keys_and_osc(launch):
    port = free_udp_port()
    app = launch("performance", "dog", osc_port=port, show_hud=False)
    app.wait_for("live frames", lambda: any(row[1] == "live" for row in app.frames()), STARTUP_S)
    assert app.changing(), "live frames should keep the picture moving"

    app.press("space", logged="'frozen': True")
    frozen = app.x.screenshot()
    app.frames_come_in()
    np.testing.assert_array_equal(app.x.screenshot(), frozen)  # new frames kept coming; none was taken

    app.press("h", logged="'hud': True")  # the status line, "frozen", is drawn over the bottom-left
    with_hud = app.x.screenshot()
    changed = np.argwhere((with_hud != frozen).any(axis=2))
    assert len(changed) and changed[:, 0].min() > SCREEN[1] // 2 and changed[:, 1].max() < SCREEN[0] * 0.8
    app.press("h", logged="'hud': False")
    np.testing.assert_array_equal(app.x.screenshot(), frozen)

    app.press("b", logged="'blackout': True")
    assert app.x.screenshot().max() == 0
    app.press("b", logged="'blackout': False")
    np.testing.assert_array_equal(app.x.screenshot(), frozen)  # still frozen under the blackout

    app.press("space", logged="'frozen': False")
    assert app.changing()

    app.press("2", logged="'forced_label': 'rooster'")  # 'all' classes: ESC-50's order, dog then rooster
    app.wait_for("the server asked to dream the rooster", lambda: app.server.steered[-1:] == [
        {"class": "rooster", "intensity": 1.0, "layer": None}])
    app.wait_for("the rooster's seed", lambda: app.frames()[-1][1:3] == ["seed", "rooster"])
    # Live frames are one colour each; the seed image is not. (Polled: it fades in over a second or so.)
    app.wait_for("a picture that is not the live frames", lambda: not solid(app.x.screenshot()))
    app.press("0", logged="'forced_label': None")
    app.wait_for("the server back to what it hears", lambda: app.server.steered[-1:] == [
        {"class": None, "intensity": 1.0, "layer": None}])
    app.wait_for("live frames again", lambda: app.frames()[-1][1:3] == ["live", "dog"])

    app.press("Down", logged="'intensity': 0.9")
    app.wait_for("the server told the intensity", lambda: app.server.steered[-1:] == [
        {"class": None, "intensity": 0.9, "layer": None}])
    app.press("Right", logged="'zoom': 0.06")

    osc = SimpleUDPClient("127.0.0.1", port)
    app.do(lambda: osc.send_message("/hear-and-see/blackout", 1), logged="'blackout': True")
    assert app.x.screenshot().max() == 0
    app.do(lambda: osc.send_message("/hear-and-see/hello", 1), logged="unknown OSC address '/hear-and-see/hello'")
    app.do(lambda: osc.send_message("/hear-and-see/blackout", 0), logged="'blackout': False")
    assert app.x.screenshot().max() > 0

    app.x.press("Escape")
    assert app.finish() == 0, app.log()[-3000:]
    assert "blackout" in {row[1] for row in app.frames()}


def test_gallery_is_fullscreen_attract_mode_and_only_the_chord_ends_it(launch):
    app = launch("gallery", None)
    app.wait_for("attract frames", lambda: len(app.frames()) > 5, STARTUP_S)
    assert f"window {SCREEN[0]}x{SCREEN[1]} fullscreen" in app.log()
    assert all(row[2] == "-" and row[1] in ("seed", "prerendered") for row in app.frames())  # silence: attract
    assert not app.x.cursor_visible()
    lit = app.x.screenshot().max(axis=2) > 0
    assert lit.any(axis=0).all() and lit.any(axis=1).all(), "the picture should cover the screen"

    for key in ("Escape", "h", "space", "b", "1", "q"):
        app.x.press(key)
    app.x.press("Control_L", "q")  # not the whole chord
    app.settle(10)
    assert app.process.poll() is None, "gallery keys must not end the show"
    assert "controls:" not in app.log()

    app.x.press("Control_L", "Shift_L", "q")
    assert app.finish() == 0, app.log()[-3000:]
    assert "controls: {'quit': True}" in app.log()


def test_toy_shows_the_animal_name_large(launch):
    app = launch("toy", "dog")
    # The live frames are saturated colours, never white: white is the name, drawn over them.
    app.wait_for("the name, large", lambda: white_pixels(app.x.screenshot()) > 2000, STARTUP_S)

    for key in ("space", "b", "1", "h", "Escape"):  # a child at the keyboard changes nothing
        app.x.press(key)
    app.settle(10)
    assert app.process.poll() is None, "a child's key must not end the toy"
    assert "controls:" not in app.log()
    assert white_pixels(app.x.screenshot()) > 2000
    app.process.send_signal(signal.SIGTERM)  # systemctl stop
    assert app.finish() == 0, app.log()[-3000:]
    assert "controls: {'quit': True}" in app.log()
