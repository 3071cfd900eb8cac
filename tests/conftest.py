"""Shared fixtures: real services (PulseAudio, Xvfb) started by the tests themselves and stopped by PID."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import threading

import numpy as np
import pytest
import zmq
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HEAR_AND_SEE_SHARED", REPO_ROOT.parent / "shared"))


def free_tcp_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def address() -> str:
    return free_tcp_address()


@pytest.fixture(scope="session")
def pulseaudio(tmp_path_factory):
    """A private PulseAudio daemon with a null sink whose monitor is the default source.

    Yields the environment a client needs; what is played to the sink with paplay is what a
    sounddevice InputStream on the 'pulse' device hears."""
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("PulseAudio is not installed (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)")
    runtime = tmp_path_factory.mktemp("pulse")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PULSE_RUNTIME_PATH": str(runtime / "pulse")}
    proc = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
         "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=hs_null",
         "--load=module-always-sink"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip("PulseAudio did not start on this machine")
        time.sleep(0.1)
    subprocess.run(["pactl", "set-default-source", "hs_null.monitor"], env=env, check=True)
    subprocess.run(["pactl", "set-default-sink", "hs_null"], env=env, check=True)
    old = {k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH")}
    os.environ.update(XDG_RUNTIME_DIR=env["XDG_RUNTIME_DIR"], PULSE_RUNTIME_PATH=env["PULSE_RUNTIME_PATH"])
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


DREAM_SIZE = 64


@pytest.fixture(scope="session")
def networks():
    """The real classifier and dream backbone, random init (fast to build; weights do not matter here)."""
    from models.backbones import create_backbone
    from models.classes import ESC50_CLASSES
    from models.model import build_model

    classifier = build_model("efficientnet_lite0", ESC50_CLASSES, pretrained=False).eval()
    return classifier, create_backbone("efficientnet_lite0", pretrained=False).eval()


@pytest.fixture(scope="session")
def seeds(tmp_path_factory):
    from models.classes import ESC50_CLASSES

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
