"""The main loop's own small pieces (app/run.py), with plain values."""
import pygame

from app.controls import Bindings, Controls, parse_chord
from app.run import apply_events, apply_osc, next_hop

BINDINGS = Bindings("performance", ("dog", "cat"), parse_chord("ctrl+shift+q"))


def test_hops_stay_on_their_grid_and_skip_what_a_stall_missed():
    assert next_hop(10.0, 10.01, 0.5) == 10.5
    assert next_hop(10.0, 11.3, 0.5) == 11.5  # 10.5 and 11.0 were missed: not sent late in a burst


def test_window_events_go_through_the_mode_bindings():
    events = [pygame.event.Event(pygame.KEYDOWN, key=pygame.K_SPACE, mod=0),
              pygame.event.Event(pygame.KEYDOWN, key=pygame.K_2, mod=0),
              pygame.event.Event(pygame.MOUSEMOTION, pos=(1, 1))]
    assert apply_events(Controls(), events, BINDINGS) == Controls(frozen=True, forced_label="cat")
    chord = pygame.event.Event(pygame.KEYDOWN, key=pygame.K_q, mod=pygame.KMOD_LCTRL | pygame.KMOD_RSHIFT)
    assert apply_events(Controls(), [chord], BINDINGS).quit
    assert apply_events(Controls(), [pygame.event.Event(pygame.QUIT)], BINDINGS).quit


def test_a_bad_osc_message_is_logged_and_the_rest_applied(caplog):
    messages = [("/hear-and-see/blackout", (1,)), ("/hear-and-see/class", ("unicorn",)),
                ("/hear-and-see/intensity", (0.5,))]
    assert apply_osc(Controls(), messages, BINDINGS) == Controls(blackout=True, intensity=0.5)
    assert "unicorn" in caplog.text
