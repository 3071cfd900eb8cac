"""The display layer: a real pygame window under Xvfb driven by the app's own step, draw and key bindings,
the headless offscreen target, contact sheets."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from types import SimpleNamespace

import numpy as np
import pygame
import pytest
from PIL import Image

from app.client import Frame
from app.config import Settings
from app.controls import Bindings, Controls, parse_chord
from app.modes import ShowState, step
from app.run import apply_events, draw
from tests.conftest import XClient
from visualizer import FallbackPlayer, Renderer, open_display, save_contact_sheet


def step_and_draw(state, display, renderer, controls, now, results=(), frame=None):
    """One turn of the app's own step and draw (app/modes.py, app/run.py); what the window shows, read back
    through the window before its swap, as the app's recorder does."""
    state, plan = step(state, results, frame, controls, True, now)
    draw(plan, renderer, FallbackPlayer("/nonexistent", "/nonexistent"), display, now, now)
    return state, display.read_pixels()


def window_session(display_name: str) -> dict:
    """Runs in a fresh interpreter: Mesa refuses a GLX context in a process that made an EGL one,
    as the offscreen tests here do (the app only ever makes one of the two)."""
    red = np.zeros((224, 224, 3), np.uint8)
    red[..., 0] = 255
    heard = SimpleNamespace(label="dog", confidence=0.9, top=[("dog", 0.9)], trained=True)
    live = Frame(1, "dog", red, 0.0)
    bindings = Bindings("default", ("dog",), parse_chord("ctrl+shift+q"))
    controls, state = Controls(zoom=Settings.zoom_rate), ShowState()
    with open_display(640, 360, vsync=False, hide_cursor=True) as display:  # DISPLAY set: a window
        renderer = Renderer(display.ctx, *display.size, vignette=0.0, zoom_rate=Settings.zoom_rate)
        state, _ = step_and_draw(state, display, renderer, controls, 0.0, [heard], live)
        state, with_hud = step_and_draw(state, display, renderer, controls, 2.0)  # faded in, still fresh
        display.swap()

        events = wait_for_events(display, pygame.WINDOWSHOWN)
        XClient(display_name).press("h")  # through the X server, as a keyboard would
        events += wait_for_events(display, pygame.KEYDOWN)
        controls = apply_events(controls, events, bindings)
        state, toggled = step_and_draw(state, display, renderer, controls, 2.1)
        display.swap()
        return dict(headless=display.headless, size=display.size, cursor=pygame.mouse.get_visible(),
                    with_hud=with_hud, toggled=toggled, hud_rect=renderer.hud_rect, hud=controls.hud,
                    events=[event.type for event in events])


def wait_for_events(display, kind, seconds=3.0) -> list[pygame.event.Event]:
    deadline, events = time.monotonic() + seconds, []
    while time.monotonic() < deadline and not any(e.type == kind for e in events):
        events += display.events()
        time.sleep(0.01)
    return events


def test_a_key_pressed_on_the_window_reaches_the_app_bindings_and_the_picture(x_server, monkeypatch):
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):  # the window process opens on x_server
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DISPLAY", x_server.name)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        seen = pool.submit(window_session, x_server.name).result(timeout=60)
    assert not seen["headless"] and seen["size"] == (640, 360) and not seen["cursor"]
    assert pygame.WINDOWSHOWN in seen["events"]  # events from the X server reach pygame
    np.testing.assert_allclose(seen["with_hud"][180, 320], (255, 0, 0), atol=2)  # the live frame, drawn
    x, y, w, h = seen["hud_rect"]
    assert np.abs(seen["with_hud"][y:y + h, x:x + w].astype(int) - (255, 0, 0)).max() > 100  # the HUD over it
    assert seen["hud"] is False  # "h" through the default mode's bindings
    np.testing.assert_allclose(seen["toggled"][y:y + h, x:x + w].reshape(-1, 3).mean(axis=0),
                               (255, 0, 0), atol=2)  # and the HUD is gone from the window


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
        renderer = Renderer(display.ctx, *display.size, vignette=0.0, hud_visible=False, zoom_rate=Settings.zoom_rate)
        blue = np.zeros((50, 50, 3), np.uint8)
        blue[..., 2] = 255
        renderer.show_frame(blue, "live")
        renderer.draw(0.0)
        renderer.draw(5.0)
        pixels = display.read_pixels()
        display.swap()
        assert pixels.shape == (100, 200, 3)
        np.testing.assert_allclose(pixels.reshape(-1, 3).mean(axis=0), (0, 0, 255), atol=2)
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
