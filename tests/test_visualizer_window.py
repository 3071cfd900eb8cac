"""The display layer: headless offscreen target, a real pygame window under Xvfb, contact sheets."""
from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import select
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pygame
import pytest
from PIL import Image

from visualizer import Renderer, open_display, save_contact_sheet


def egl_display(width, height):
    try:
        return open_display(width, height, headless=True)
    except RuntimeError as error:
        pytest.skip(f"no EGL for offscreen OpenGL: {error}")


@pytest.fixture
def xvfb(monkeypatch):
    """A private X server. -displayfd lets it pick a free display number without races, and
    -terminate ends it with its last client should this process die before the teardown."""
    executable = shutil.which("Xvfb")
    if executable is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb)")
    read_end, write_end = os.pipe()
    server = subprocess.Popen([executable, "-displayfd", str(write_end), "-screen", "0", "1280x720x24",
                               "-nolisten", "tcp", "-terminate"], pass_fds=(write_end,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 15)
        number = os.read(read_end, 16).decode().strip() if ready else ""
        if not number:
            pytest.fail("Xvfb did not start")
        monkeypatch.setenv("DISPLAY", f":{number}")
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
        yield f":{number}"
    finally:
        os.close(read_end)
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def press_key(display_name: str, keysym: bytes) -> None:
    """A real key press and release through the X server (XTEST), not a synthetic pygame event."""
    x11_path, xtst_path = ctypes.util.find_library("X11"), ctypes.util.find_library("Xtst")
    x11, xtst = ctypes.CDLL(x11_path), ctypes.CDLL(xtst_path)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XStringToKeysym.restype = ctypes.c_ulong
    x11.XStringToKeysym.argtypes = [ctypes.c_char_p]
    x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    connection = x11.XOpenDisplay(display_name.encode())
    keycode = x11.XKeysymToKeycode(connection, x11.XStringToKeysym(keysym))
    xtst.XTestFakeKeyEvent(connection, keycode, True, 0)
    xtst.XTestFakeKeyEvent(connection, keycode, False, 0)
    x11.XFlush(connection)
    x11.XCloseDisplay(connection)


def wait_for_events(display, kind, seconds=3.0) -> list[pygame.event.Event]:
    deadline, events = time.monotonic() + seconds, []
    while time.monotonic() < deadline and not any(e.type == kind for e in events):
        events += display.events()
        time.sleep(0.01)
    return events


def window_session(display_name: str) -> dict:
    """Runs in a fresh interpreter: Mesa refuses a GLX context in a process that made an EGL one,
    as the offscreen tests here do (the app only ever makes one of the two)."""
    with open_display(640, 360, vsync=False, hide_cursor=True) as display:  # DISPLAY set: a window
        renderer = Renderer(display.ctx, *display.size, vignette=0.0)
        renderer.set_label("dog", 0.9, [("dog", 0.9)], "listening")
        red = np.zeros((224, 224, 3), np.uint8)
        red[..., 0] = 255
        renderer.show_frame(red, "live")
        renderer.draw(0.0)
        renderer.draw(5.0)
        with_hud = renderer.read_pixels()  # glReadPixels of the window's back buffer
        display.swap()

        events = wait_for_events(display, pygame.WINDOWSHOWN)
        press_key(display_name, b"h")
        events += wait_for_events(display, pygame.KEYDOWN)
        for event in events:
            if event.type == pygame.KEYDOWN and event.key == pygame.K_h:  # the app's toggle
                renderer.hud_visible = not renderer.hud_visible
        renderer.draw(5.1)
        toggled = renderer.read_pixels()
        display.swap()
        return dict(headless=display.headless, size=display.size, cursor=pygame.mouse.get_visible(),
                    with_hud=with_hud, toggled=toggled, hud_rect=renderer.hud_rect,
                    hud_visible=renderer.hud_visible, events=[event.type for event in events])


def test_window_under_xvfb_draws_and_receives_keys(xvfb):
    if not (ctypes.util.find_library("X11") and ctypes.util.find_library("Xtst")):
        pytest.skip("libX11/libXtst not found to send a key through X (Debian: libxtst6)")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        seen = pool.submit(window_session, xvfb).result(timeout=60)
    assert not seen["headless"] and seen["size"] == (640, 360) and not seen["cursor"]
    np.testing.assert_allclose(seen["with_hud"][180, 320], (255, 0, 0), atol=2)
    x, y, w, h = seen["hud_rect"]
    assert np.abs(seen["with_hud"][y:y + h, x:x + w].astype(int) - (255, 0, 0)).max() > 100
    assert pygame.WINDOWSHOWN in seen["events"]  # events from the X server reach pygame
    assert not seen["hud_visible"]
    np.testing.assert_allclose(seen["toggled"][y:y + h, x:x + w].reshape(-1, 3).mean(axis=0),
                               (255, 0, 0), atol=2)


def test_headless_display_has_the_same_interface(monkeypatch, tmp_path):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    try:
        display = open_display(200, 100)  # no display server: headless by default
    except RuntimeError as error:
        pytest.skip(f"no EGL for offscreen OpenGL: {error}")
    with display:
        assert display.headless and display.size == (200, 100)
        assert display.events() == []
        renderer = Renderer(display.ctx, *display.size)
        renderer.draw(0.0)
        pixels = display.read_pixels()
        display.swap()
        np.testing.assert_array_equal(pixels, renderer.read_pixels())
        display.save_png(pixels, tmp_path / "frame.png")
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "frame.png")), pixels)


def test_contact_sheet_tiles_frames_in_rows(tmp_path):
    frames = [np.full((90, 160, 3), 40 * i, np.uint8) for i in range(5)]
    path = save_contact_sheet(frames, tmp_path / "sheets" / "run.png", columns=2, cell_width=80, gap=4)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (3 * 45 + 4 * 4, 2 * 80 + 3 * 4, 3)
    assert sheet[4 + 45 + 4 + 20, 4 + 80 + 4 + 40, 0] == 120  # the fourth frame: row 1, column 1


def test_the_visualizer_imports_no_model_code():
    # The display must start (and keep showing pictures) on a machine without torch.
    probe = ("import sys, visualizer; "
             "print([m for m in ('torch', 'models', 'app', 'inference_server') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"
