"""Shared fixtures and helpers: real services (PulseAudio, Xvfb) started by the tests themselves and stopped
by PID, an X client that presses keys and takes screenshots, the real networks and seed images."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
# torchvision loads triton, whose LLVM crashes the process if Mesa's EGL (moderngl) has loaded its own first. The
# in-process servers of some tests and the window of others share one process, so triton goes first.
import torchvision  # noqa: F401
import zmq
from PIL import Image

from app.client import free_tcp_address

from common.paths import REPO_ROOT, SHARED  # noqa: F401  (the tests' one definition of both)


@pytest.fixture
def address() -> str:
    return free_tcp_address()


def wait_until(what: str, observe, until=bool, timeout: float = 20.0, interval: float = 0.05):
    """Look with `observe()` every `interval` seconds until `until` holds for what it sees, and return that.
    Past `timeout` the test fails, saying what it waited for and what it saw last: tests wait for a condition,
    never a fixed time, so a loaded machine makes them slower, not wrong."""
    deadline = time.monotonic() + timeout
    while True:
        seen = observe()
        if until(seen):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}; last saw {_short(seen)}")
        time.sleep(interval)


def _short(value, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


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


class XImage(ctypes.Structure):  # the leading fields of Xlib's XImage, which is all that is read
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
                ("format", ctypes.c_int), ("data", ctypes.c_void_p), ("byte_order", ctypes.c_int),
                ("bitmap_unit", ctypes.c_int), ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int),
                ("depth", ctypes.c_int), ("bytes_per_line", ctypes.c_int), ("bits_per_pixel", ctypes.c_int)]


class XFixesCursorImage(ctypes.Structure):
    _fields_ = [("x", ctypes.c_short), ("y", ctypes.c_short), ("width", ctypes.c_ushort),
                ("height", ctypes.c_ushort), ("xhot", ctypes.c_ushort), ("yhot", ctypes.c_ushort),
                ("cursor_serial", ctypes.c_ulong), ("pixels", ctypes.POINTER(ctypes.c_ulong))]


X_LIBRARIES = ("X11", "Xtst", "Xfixes")


class XClient:
    """A connection to an X server that presses keys (XTEST) and takes screenshots like a person would see.
    Plain Xlib through ctypes: it can run in any process, beside a window or in the test itself."""

    def __init__(self, display_name: str):
        self.x11, self.xtst, self.xfixes = (ctypes.CDLL(ctypes.util.find_library(name)) for name in X_LIBRARIES)
        x11, xtst, xfixes = self.x11, self.xtst, self.xfixes
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XDefaultRootWindow.restype = ctypes.c_ulong
        x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        x11.XDisplayWidth.argtypes = x11.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
        x11.XStringToKeysym.restype = ctypes.c_ulong
        x11.XStringToKeysym.argtypes = [ctypes.c_char_p]
        x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        x11.XGetImage.restype = ctypes.POINTER(XImage)
        x11.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                                  ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
        x11.XDestroyImage.argtypes = [ctypes.POINTER(XImage)]
        x11.XFree.argtypes = [ctypes.c_void_p]
        x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
        xfixes.XFixesGetCursorImage.restype = ctypes.POINTER(XFixesCursorImage)
        xfixes.XFixesGetCursorImage.argtypes = [ctypes.c_void_p]
        self.connection = x11.XOpenDisplay(display_name.encode())
        if not self.connection:
            pytest.fail(f"cannot connect to the X server {display_name}")

    def press(self, *keysyms: str) -> None:
        """Press the keys in order, then release them in reverse: one key, or a chord."""
        codes = [self.x11.XKeysymToKeycode(self.connection, self.x11.XStringToKeysym(k.encode())) for k in keysyms]
        for code in codes:
            self.xtst.XTestFakeKeyEvent(self.connection, code, True, 0)
        for code in reversed(codes):
            self.xtst.XTestFakeKeyEvent(self.connection, code, False, 0)
        self.x11.XFlush(self.connection)

    def screenshot(self) -> np.ndarray:
        """The whole screen as H x W x 3 uint8 RGB, as the X server has it."""
        x11, connection = self.x11, self.connection
        size = x11.XDisplayWidth(connection, 0), x11.XDisplayHeight(connection, 0)
        image = x11.XGetImage(connection, x11.XDefaultRootWindow(connection), 0, 0, *size, 0xFFFFFFFF, 2)  # ZPixmap
        try:
            ximage = image.contents
            assert ximage.bits_per_pixel == 32 and ximage.byte_order == 0  # BGRX, least significant byte first
            data = ctypes.string_at(ximage.data, ximage.bytes_per_line * ximage.height)
            pixels = np.frombuffer(data, np.uint8).reshape(ximage.height, ximage.bytes_per_line // 4, 4)
            return pixels[:, :ximage.width, 2::-1].copy()
        finally:
            x11.XDestroyImage(image)

    def cursor_visible(self) -> bool:
        """Whether the pointer's current cursor has any pixel that is not fully transparent."""
        cursor = self.xfixes.XFixesGetCursorImage(self.connection)
        try:
            c = cursor.contents
            return any(c.pixels[i] >> 24 for i in range(c.width * c.height))  # ARGB
        finally:
            self.x11.XFree(cursor)

    def close(self) -> None:
        if self.connection:
            self.x11.XCloseDisplay(self.connection)
            self.connection = None


class XServer(XClient):
    """A private Xvfb of `size`, and a client of it (`press`, `screenshot`, `cursor_visible`); `name` is its
    DISPLAY. -displayfd lets Xvfb pick a free display number without races (the read end stays open while
    it runs: Xvfb dies if it cannot finish that write); -terminate ends it with its last client should this
    process die before the teardown."""

    def __init__(self, size: tuple[int, int]):
        self._display_fd, write_end = os.pipe()
        self.process = subprocess.Popen(
            [shutil.which("Xvfb"), "-displayfd", str(write_end), "-screen", "0", f"{size[0]}x{size[1]}x24",
             "-nolisten", "tcp", "-terminate"], pass_fds=(write_end,),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_end)
        self.connection = None
        ready, _, _ = select.select([self._display_fd], [], [], 15)
        number = os.read(self._display_fd, 16).decode().strip() if ready else ""
        if not number:
            self.close()
            pytest.fail("Xvfb did not start")
        self.name = f":{number}"
        try:
            super().__init__(self.name)
        except BaseException:
            self.close()
            raise

    def env(self) -> dict:
        """The environment for a process that opens its window on this server."""
        env = {**os.environ, "DISPLAY": self.name}
        env.pop("WAYLAND_DISPLAY", None)
        env.pop("SDL_VIDEODRIVER", None)
        return env

    def close(self) -> None:
        super().close()
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._display_fd)


SCREEN = (640, 360)


@pytest.fixture(scope="module")
def x_server():
    """An Xvfb screen of SCREEN pixels for the module's tests; skipped where Xvfb or Xlib is missing."""
    missing = [name for name in X_LIBRARIES if ctypes.util.find_library(name) is None]
    if shutil.which("Xvfb") is None or missing:
        pytest.skip(f"needs Xvfb and lib{', lib'.join(X_LIBRARIES)} (Debian: xvfb libxtst6 libxfixes3); "
                    f"missing: {missing or 'Xvfb'}")
    server = XServer(SCREEN)
    yield server
    server.close()


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
    head is never confident, and the tests that use this are about the wire). `batch`: the dream setting."""

    def __init__(self, networks, seeds, address, batch=0, **options):
        from inference_server.server import DreamSettings, InferenceServer
        from models.gate import GateSettings

        classifier, backbone = networks
        self.server = InferenceServer(classifier, backbone, seeds, address,
                                      gate=GateSettings(silence_dbfs=-200, min_confidence=0.0, enter_windows=1),
                                      dream=DreamSettings(size=DREAM_SIZE, batch=batch), context=zmq.Context(),
                                      **options)
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
