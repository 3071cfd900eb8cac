"""The main loop's own pieces (app/run.py): plain values in, and draw() into an offscreen display."""

import numpy as np
import pygame
import pytest

from app.client import Frame
from app.config import Settings
from app.controls import Bindings, Controls, parse_chord
from app.modes import FALLBACK, LIVE, Plan, Scene
from app.run import WindowClock, apply_events, apply_osc, draw, next_hop
from visualizer import Renderer, open_display

ZOOM = Settings.zoom_rate

BINDINGS = Bindings("performance", ("dog", "cat"), parse_chord("ctrl+shift+q"))


def test_hops_stay_on_their_grid_and_skip_what_a_stall_missed():
    assert next_hop(10.0, 10.01, 0.5) == 10.5
    assert next_hop(10.0, 11.3, 0.5) == 11.5  # 10.5 and 11.0 were missed: not sent late in a burst


def sends(clock: WindowClock, until: float, onsets=()) -> list[int]:
    """The times the loop sends a window, at 10 ms turns (integer milliseconds, so the grid is exact)."""
    sent = []
    for ms in range(0, int(until * 1000) + 1, 10):
        if ms in onsets:
            clock.sound_began(ms / 1000)
        if clock.due(ms / 1000):
            sent.append(ms)
    return sent


def test_windows_go_on_the_hop_and_also_timed_from_a_sound_onset():
    assert sends(WindowClock(0.5, 0.0), 2.0) == [500, 1000, 1500, 2000]
    looks = (0.3, 0.4, 0.5, 0.7, 1.0)
    sent = sends(WindowClock(0.5, 0.0, looks), 3.0, onsets=(1220, 1270, 1600))  # a bark, its next 50 ms, its echo
    # every look goes out on the turn it is due (1220 ms + looks), except 1520: 20 ms after the 1500 hop it would
    # add nothing; the echo at 1600 starts no looks of its own while the bark's are pending
    assert sent == [500, 1000, 1500, 1620, 1720, 1920, 2000, 2220, 2500, 3000], sent


def test_window_events_go_through_the_mode_bindings():
    events = [pygame.event.Event(pygame.KEYDOWN, key=pygame.K_SPACE, mod=0),
              pygame.event.Event(pygame.KEYDOWN, key=pygame.K_2, mod=0),
              pygame.event.Event(pygame.MOUSEMOTION, pos=(1, 1))]
    assert apply_events(Controls(zoom=ZOOM), events, BINDINGS) == Controls(zoom=ZOOM, frozen=True, forced_label="cat")
    chord = pygame.event.Event(pygame.KEYDOWN, key=pygame.K_q, mod=pygame.KMOD_LCTRL | pygame.KMOD_RSHIFT)
    assert apply_events(Controls(zoom=ZOOM), [chord], BINDINGS).quit
    assert apply_events(Controls(zoom=ZOOM), [pygame.event.Event(pygame.QUIT)], BINDINGS).quit


def test_a_bad_osc_message_is_logged_and_the_rest_applied(caplog):
    messages = [("/hear-and-see/blackout", (1,)), ("/hear-and-see/class", ("unicorn",)),
                ("/hear-and-see/intensity", (0.5,))]
    assert apply_osc(Controls(zoom=ZOOM), messages, BINDINGS) == Controls(zoom=ZOOM, blackout=True, intensity=0.5)
    assert "unicorn" in caplog.text


@pytest.fixture
def screen():
    try:
        display = open_display(160, 90, headless=True)
    except RuntimeError as error:
        pytest.skip(f"no EGL for offscreen OpenGL: {error}")
    with display:
        yield display, Renderer(display.ctx, *display.size, vignette=0.0, hud_visible=False, zoom_rate=Settings.zoom_rate)


class NoPictures:
    def frame(self, label, now):
        return None


def live_plan(**options):
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    scene = Scene("showing", "dog", 0.9, "live", [], "showing")
    return Plan(scene, LIVE, frame=Frame(1, "dog", red, 0.0), **{"zoom": ZOOM, **options})


def test_draw_starts_a_live_keyframe_and_takes_the_new_zoom_rate_with_it(screen):
    display, renderer = screen
    assert draw(live_plan(zoom=0.2, hud=False), renderer, NoPictures(), display, 0.0, 0.0) == "live"
    assert renderer.zoom_rate == 0.2
    draw(live_plan(zoom=0.2, hud=False), renderer, NoPictures(), display, 5.0, 5.0)
    np.testing.assert_allclose(display.read_pixels().reshape(-1, 3).mean(axis=0), (255, 0, 0), atol=2)


def test_without_a_keyframe_the_zoom_rate_waits(screen):
    display, renderer = screen
    keep = Plan(Scene("showing", "dog", 0.9, "fallback", [], "showing"), FALLBACK, zoom=0.2)
    assert draw(keep, renderer, NoPictures(), display, 0.0, 0.0) is None  # no picture was due
    assert renderer.zoom_rate == ZOOM  # changed mid-keyframe, the picture on screen would jump


def test_blackout_draws_black_and_nothing_else(screen):
    display, renderer = screen
    draw(live_plan(blackout=True, hud=True), renderer, NoPictures(), display, 5.0, 5.0)
    assert display.read_pixels().max() == 0
