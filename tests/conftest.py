"""Shared fixtures: real services (PulseAudio, Xvfb) started by the tests themselves and stopped by PID."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from PIL import Image

from app.run import free_tcp_address

from common.paths import REPO_ROOT, SHARED  # noqa: F401  (the tests' one definition of both)


@pytest.fixture
def address() -> str:
    return free_tcp_address()


class PulseServer:
    """A private PulseAudio daemon with a null sink whose monitor is the default source: what paplay
    plays to the sink is what a sounddevice InputStream on the 'pulse' device hears. `env` is what a
    client needs; kill() and start() again simulate a sound card unplugged and plugged back."""

    def __init__(self, runtime: Path):
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PULSE_RUNTIME_PATH": str(runtime / "pulse")}
        self.proc = None

    def start(self) -> "PulseServer":
        self.proc = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
             "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=hs_null"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.skip("PulseAudio did not start on this machine")
            time.sleep(0.1)
        subprocess.run(["pactl", "set-default-source", "hs_null.monitor"], env=self.env, check=True)
        subprocess.run(["pactl", "set-default-sink", "hs_null"], env=self.env, check=True)
        return self

    def play(self, wav: Path) -> None:
        subprocess.run(["paplay", "--device=hs_null", str(wav)], env=self.env, check=True, timeout=20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)


@pytest.fixture
def pulseaudio(tmp_path, monkeypatch):
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("PulseAudio is not installed (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)")
    server = PulseServer(tmp_path / "pulse")
    (tmp_path / "pulse").mkdir()
    for key in ("XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH"):
        monkeypatch.setenv(key, server.env[key])
    yield server.start()
    server.kill()


DREAM_SIZE = 64


@pytest.fixture(scope="session")
def networks():
    """The real classifier and dream backbone, random init (fast to build; weights do not matter here)."""
    from models.backbones import create_backbone
    from common.classes import ESC50_CLASSES
    from models.model import build_model

    classifier = build_model("efficientnet_lite0", ESC50_CLASSES, pretrained=False).eval()
    return classifier, create_backbone("efficientnet_lite0", pretrained=False).eval()


@pytest.fixture(scope="session")
def seeds(tmp_path_factory):
    from common.classes import ESC50_CLASSES

    root = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    for name in ESC50_CLASSES:
        (root / name).mkdir()
        Image.fromarray(rng.integers(40, 220, (80, 80, 3), dtype=np.uint8)).save(root / name / "seed.png")
    return root


class RunningServer:
    """A real InferenceServer on its own thread and zmq context; every window gets a label (the random-init
    head is never confident, and the tests that use this are about the wire)."""

    def __init__(self, networks, seeds, address, **options):
        from inference_server.server import DreamSettings, GateSettings, InferenceServer

        classifier, backbone = networks
        self.server = InferenceServer(classifier, backbone, seeds, address,
                                      gate=GateSettings(silence_dbfs=-200, min_confidence=0.0, enter_windows=1),
                                      dream=DreamSettings(size=DREAM_SIZE), context=zmq.Context(), **options)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve_forever, args=(self.stop.is_set,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        self.server.ctx.term()


@pytest.fixture
def running(networks, seeds, address):
    server = RunningServer(networks, seeds, address)
    yield server
    server.close()
