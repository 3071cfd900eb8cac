"""The app's main loop: poll, step, draw, swap.

Every turn it polls what came in (the sound source, the server's results and frames, keys and OSC), lets
`app.modes.step` decide what to show (and what the server should dream), draws that, and swaps. It draws at
display rate whatever arrives; audio capture runs on its own thread and the server in its own process, so a
slow dream never stalls the picture.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # before the first pygame import

import pygame  # noqa: E402

from app.capture import SAMPLE_RATE, RingBuffer, sound_began
from app.client import InferenceClient, free_tcp_address
from app.config import DISCOVER, Settings, server_addresses
from app.console import Console
from app.controls import Bindings, ControlError, Controls, FreezableClock, OscListener, changed, class_list, parse_chord
from app.modes import FALLBACK, LIVE, Plan, ShowState, Steering, step
from app.recording import Recorder, RunReport
from app.supervise import MicrophoneSupervisor, RecordingPlayer, ServerSupervisor, server_command
from common.errors import UserError
from common.protocol import is_loopback
from visualizer.fallback import FallbackPlayer
from visualizer.renderer import Renderer
from visualizer.window import open_display

log = logging.getLogger("hear_and_see.app")

HEADLESS_FPS = 30            # headless output is paced like a window would be, in real time
LOOKS_AFTER_ONSET = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # seconds after a sound begins (WindowClock)
LOOK_GAP_SECONDS = 0.08      # a look this soon after the last window sent adds nothing


def modifier_names(mod: int) -> frozenset[str]:
    """pygame's modifier bits as the names exit_chord uses; either side's key counts."""
    bits = {"ctrl": pygame.KMOD_CTRL, "shift": pygame.KMOD_SHIFT, "alt": pygame.KMOD_ALT, "meta": pygame.KMOD_META}
    return frozenset(name for name, bit in bits.items() if mod & bit)


def apply_events(controls: Controls, events, bindings: Bindings) -> Controls:
    """The window's events through the mode's bindings."""
    for event in events:
        if event.type == pygame.QUIT:
            controls = bindings.on_window_close(controls)
        elif event.type == pygame.KEYDOWN:
            controls = bindings.on_key(controls, pygame.key.name(event.key), modifier_names(event.mod))
    return controls


def apply_osc(controls: Controls, messages, bindings: Bindings) -> Controls:
    for osc_address, args in messages:
        try:
            controls = bindings.on_osc(controls, osc_address, args)
        except ControlError as exc:
            log.warning("ignored an OSC message: %s", exc)
    return controls


def next_hop(due: float, now: float, hop_seconds: float) -> float:
    """The next hop after one that was due at `due`: on the hop grid, skipping the hops a stall missed."""
    return due + hop_seconds * max(1, int((now - due) / hop_seconds) + 1)


class WindowClock:
    """When the newest 4 s go to the server: every hop, and at each of `looks` seconds after a sound begins.
    The ear names half of all sounds within 0.5 s of their onset and most within a second; on the hop's grid
    that moment waits for the next hop, so through a sound's first second the windows are timed from the sound
    instead of the clock (BENCHMARKS.md, "Windows timed from a sound's onset")."""

    def __init__(self, hop_seconds: float, now: float, looks: tuple[float, ...] = LOOKS_AFTER_ONSET):
        self.hop_seconds, self.hop_due, self.after_onset = hop_seconds, now + hop_seconds, looks
        self.looks: list[float] = []
        self.last_sent = float("-inf")

    def sound_began(self, now: float) -> None:
        if not self.looks:  # one sound's looks are not restarted by its own next 50 ms
            self.looks = [now + after for after in self.after_onset]

    def due(self, now: float) -> bool:
        send = now >= self.hop_due
        if send:
            self.hop_due = next_hop(self.hop_due, now, self.hop_seconds)
        while self.looks and now >= self.looks[0]:
            self.looks.pop(0)
            send = send or now - self.last_sent >= LOOK_GAP_SECONDS
        if send:
            self.last_sent = now
        return send


class SystemdNotifier:
    """sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET; nothing when unset.

    Under `Type=notify` with `WatchdogSec=`, systemd restarts the app when the pings stop, which is what a
    hung GL driver or a stuck loop looks like from outside. The pings come from the main loop for that reason.
    """

    def __init__(self):
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address  # "@": abstract namespace
        watchdog_usec = os.environ.get("WATCHDOG_USEC", "")
        # Twice per watchdog period, as sd_watchdog_enabled(3) advises; 1 s when none is set.
        self.ping_every = int(watchdog_usec) / 2e6 if watchdog_usec.isdigit() else 1.0
        self._next_ping = 0.0

    def notify(self, message: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(message.encode(), self.address)
        except OSError as exc:  # systemd gone or restarting: the show goes on
            log.debug("sd_notify %s failed: %s", message, exc)

    def ping(self, now: float) -> None:
        if now >= self._next_ping:
            self._next_ping = now + self.ping_every
            self.notify("WATCHDOG=1")


def run(settings: Settings, input_file: str | None = None, device=None, headless: bool | None = None,
        duration: float | None = None, output_dir: str | Path | None = None,
        frame_log: str | Path | None = None, config_path: str | Path | None = None,
        server_key: bytes | None = None, kiosk_key: tuple[bytes, bytes] | None = None) -> RunReport:
    """The show, until `duration` or a quit. Everything it starts is stopped on every way out, in reverse order:
    a recording that cannot be read, a display that cannot open or a crash leave no server behind."""
    addresses = server_addresses(settings)
    discover = DISCOVER in addresses
    addresses = tuple(a for a in addresses if a != DISCOVER)
    beyond = [a for a in addresses if not is_loopback(a)]
    if beyond and server_key is None:  # a kiosk connects to no server whose key it does not know
        raise UserError(f"{beyond[0]} is beyond this machine: give the servers' public key (--server-key or the "
                        f"venue's server_key; `hear-and-see keys` makes it)")
    started = time.monotonic()
    with ExitStack() as stack:
        ring = RingBuffer()
        # The sound source first: a bad recording is the user's error, said before anything starts.
        source = RecordingPlayer(ring, input_file, started) if input_file is not None else MicrophoneSupervisor(ring, device)
        stack.callback(source.stop)
        server = None
        if not addresses and not discover:
            addresses = (free_tcp_address(),)
            server = ServerSupervisor(server_command(settings, addresses[0], config_path)).start()
            stack.callback(server.stop)
        # SIGTERM (systemctl stop) ends the show in every mode. Python handles it, not SDL: SDL only takes over
        # a signal nobody handles, and would turn it into the same QUIT event as the window's close button,
        # which the gallery ignores.
        terminated = []
        stack.callback(signal.signal, signal.SIGTERM, signal.signal(signal.SIGTERM,
                                                                    lambda signum, frame: terminated.append(signum)))
        # A notification taking the focus must not minimise a fullscreen show to the desktop.
        os.environ.setdefault("SDL_VIDEO_MINIMIZE_ON_FOCUS_LOSS", "0")
        display = open_display(settings.width, settings.height, fullscreen=settings.fullscreen, headless=headless,
                               hide_cursor=settings.hide_cursor)
        stack.callback(display.close)
        log.info("%s %dx%d%s", "offscreen" if display.headless else "window", *display.size,
                 " fullscreen" if settings.fullscreen and not display.headless else "")
        renderer = Renderer(display.ctx, *display.size, palette=settings.palette, vignette=settings.vignette,
                            label_style=settings.label_style, zoom_rate=settings.zoom_rate)
        fallback = FallbackPlayer(settings.prerendered_dir, settings.seeds_dir, taught_dir=settings.taught_dir)
        browser = None
        if discover:  # beyond this machine, only the servers whose key this kiosk knows (common/discovery.py)
            from common.discovery import Browser, fingerprint

            browser = Browser(fingerprint(server_key) if server_key is not None else None)
            stack.callback(browser.close)
        # named in the servers' logs by its machine and mode
        client = InferenceClient(addresses, name=f"{socket.gethostname()}-{settings.mode}", classes=settings.classes,
                                 server_key=server_key, kiosk_key=kiosk_key, discovery=browser)
        stack.callback(client.close)
        osc = None
        if settings.osc_port:
            try:
                osc = OscListener(settings.osc_host, settings.osc_port)
                stack.callback(osc.close)
            except OSError as exc:  # the keyboard still works: a taken port must not stop the show
                log.error("no OSC control: cannot listen on udp://%s:%d (%s)", settings.osc_host, settings.osc_port,
                          exc)
        systemd = SystemdNotifier()
        stack.callback(systemd.notify, "STOPPING=1")
        recorder = Recorder(output_dir, frame_log)
        stack.callback(recorder.close)
        bindings = Bindings(settings.mode, class_list(settings.classes), parse_chord(settings.exit_chord))
        controls = Controls(zoom=settings.zoom_rate, hud=settings.show_hud)
        # The web console (when console_port is set) and the opening hours; it may close or set aside the source.
        console = Console(settings, config_path, bindings, client, server, ring, source, started)
        stack.callback(console.stop)
        source = console.source
        show = ShowState()
        steering = Steering()  # what the server dreams unless told otherwise
        clock = FreezableClock()
        window_clock = WindowClock(settings.hop_seconds, time.monotonic())
        heard = 0  # ring.written at the last look for an onset
        shown, shown_keyframe = "seed", None  # where the picture on screen came from, for the frame log
        while duration is None or time.monotonic() - started < duration:
            # poll: what came in since the last turn
            now = time.monotonic()
            if server is not None:
                server.poll()
            source.poll(now, client.alive)
            if ring.written != heard:
                heard = ring.written
                if sound_began(ring.latest()):
                    window_clock.sound_began(now)
            if (window_clock.due(now) or client.wants_window) and ring.written and console.open:
                client.send_window(ring.latest(), SAMPLE_RATE)
            results, frame = client.poll(0)
            for r in results:
                recorder.label(now - started, r.label, r.confidence)
            before = controls
            controls = apply_events(controls, display.events(), bindings)
            controls = apply_osc(controls, osc.pending() if osc else (), bindings)
            if terminated:
                controls = replace(controls, quit=True)
            if controls != before:
                log.info("controls: %s", changed(before, controls))
            if controls.quit:
                break
            # step
            show, plan = step(show, results, frame, controls, client.alive, now)
            if plan.steering != steering:  # only changes go out: the client re-sends it after a reconnect
                steering = plan.steering
                client.steer(steering.dream_class, steering.intensity, steering.layer)
            # draw
            keyframe = draw(plan, renderer, fallback, display, clock(now, controls.frozen), now)
            if keyframe is not None:
                shown, shown_keyframe = keyframe, (plan.frame.id if keyframe == "live" else None)
            if keyframe == "live":
                recorder.first_live_frame(now - started)
                recorder.live_keyframe(now - started, plan.frame.image)
                client.shown(plan.frame)  # the kiosk owns its picture: a server taking over dreams on from it
            recorder.frame(now - started, "blackout" if plan.blackout else shown, plan.scene.label, display,
                           None if plan.blackout else shown_keyframe)
            controls = console.turn(now, controls, show, plan, results, display)  # before the swap: it reads back
            # swap
            display.swap()
            if recorder.first_image(time.monotonic() - started):
                systemd.notify("READY=1")  # a picture is up: systemd's start-up is over, its watchdog begins
            systemd.ping(now)
            if display.headless:
                time.sleep(max(0.0, 1.0 / HEADLESS_FPS - (time.monotonic() - now)))
    return recorder.report


def draw(plan: Plan, renderer: Renderer, fallback: FallbackPlayer, display, render_now: float,
         now: float) -> str | None:
    """Carry out the plan into the display's back buffer. Returns the source of the keyframe it started
    ("live", "prerendered" or "seed"), or None when the picture on screen goes on."""
    keyframe = None
    if plan.picture == LIVE:
        renderer.show_frame(plan.frame.image, "live", plan.frame.zoom)
        keyframe = "live"
    elif plan.picture == FALLBACK:
        picture = fallback.frame(plan.scene.label, now)
        if picture is not None:
            renderer.show_frame(picture.image, picture.source)
            keyframe = picture.source
    scene = plan.scene
    renderer.set_label(scene.label, scene.confidence, scene.top, scene.status)
    renderer.hud_visible = plan.hud
    if plan.blackout:
        display.fbo.use()
        display.fbo.clear(0.0, 0.0, 0.0, 1.0)
    else:
        renderer.draw(render_now)
    if keyframe is not None:
        # The renderer zooms by rate x time since the last keyframe, so a new rate set mid-keyframe would
        # rescale the picture at once; set with a keyframe (which starts at zoom 1) it cannot.
        renderer.zoom_rate = plan.zoom
    return keyframe
