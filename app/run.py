"""The app's main loop: every hop send the newest 4 s to the server, take back labels and dream frames, draw.

The loop draws at display rate whatever arrives; audio capture runs on its own thread and the server in
its own process, so a slow dream never stalls the picture.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pygame

from app.capture import SAMPLE_RATE, FileSource, MicrophoneError, MicrophoneSource, RingBuffer
from app.client import InferenceClient
from app.config import Settings
from app.controls import (Bindings, ControlError, Controls, FreezableClock, OscListener, changed, class_list,
                          parse_chord, steer)
from app.modes import ShowState
from app.recording import Recorder, RunReport
from visualizer.fallback import FallbackPlayer
from visualizer.renderer import Renderer
from visualizer.window import open_display

log = logging.getLogger("hear_and_see.app")

HEADLESS_FPS = 30            # headless output is paced like a window would be, in real time
MIC_RETRY_S = 2.0


def free_tcp_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def start_local_server(settings: Settings, bind: str, config_path: str | Path | None) -> subprocess.Popen:
    """The inference server as a child process, for a one-machine setup (`make run`)."""
    cmd = [sys.executable, "-m", "app.cli", "serve", "--bind", bind, "--mode", settings.mode]
    if config_path:
        cmd += ["--config", str(config_path)]
    if settings.checkpoint:
        cmd += ["--checkpoint", settings.checkpoint]
    if settings.backbone:
        cmd += ["--backbone", settings.backbone]
    cmd += ["--seeds", settings.seeds_dir, "--dream-size", str(settings.dream_size)]
    log.info("starting a local inference server: %s", " ".join(cmd))
    return subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent)


def modifier_names(mod: int) -> frozenset[str]:
    """pygame's modifier bits as the names exit_chord uses; either side's key counts."""
    bits = {"ctrl": pygame.KMOD_CTRL, "shift": pygame.KMOD_SHIFT, "alt": pygame.KMOD_ALT, "meta": pygame.KMOD_META}
    return frozenset(name for name, bit in bits.items() if mod & bit)


def apply_events(controls: Controls, events, bindings: Bindings) -> Controls:
    for event in events:
        if event.type == pygame.QUIT:
            controls = bindings.on_window_close(controls)
        elif event.type == pygame.KEYDOWN:
            controls = bindings.on_key(controls, pygame.key.name(event.key), modifier_names(event.mod))
    return controls


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
        server_key: bytes | None = None) -> RunReport:
    started = time.monotonic()
    server_process = None
    address = settings.server
    if address == "auto":
        address = free_tcp_address()
        server_process = start_local_server(settings, address, config_path)

    ring = RingBuffer()
    # A bad recording is the user's error: say so before any window opens. It starts playing once the
    # server answers, so a demo is heard from its beginning; a microphone is opened (and retried) in the loop.
    source = FileSource(ring, input_file) if input_file is not None else None
    mic_retry_at = 0.0

    # SIGTERM (systemctl stop) ends the show in every mode. Python handles it, not SDL: SDL only takes over
    # a signal nobody handles, and would turn it into the same QUIT event as the window's close button,
    # which the gallery ignores.
    terminated = []
    previous_sigterm = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    # A notification taking the focus must not minimise a fullscreen show to the desktop.
    os.environ.setdefault("SDL_VIDEO_MINIMIZE_ON_FOCUS_LOSS", "0")
    display = open_display(settings.width, settings.height, fullscreen=settings.fullscreen, headless=headless,
                           hide_cursor=settings.hide_cursor)
    log.info("%s %dx%d%s", "offscreen" if display.headless else "window", *display.size,
             " fullscreen" if settings.fullscreen and not display.headless else "")
    renderer = Renderer(display.ctx, *display.size, palette=settings.palette, vignette=settings.vignette,
                        label_style=settings.label_style, zoom_rate=settings.zoom_rate)
    fallback = FallbackPlayer(settings.prerendered_dir, settings.seeds_dir)
    show = ShowState(settings.hold_seconds)
    client = InferenceClient(address, name=settings.mode, classes=settings.classes, server_key=server_key)
    bindings = Bindings(settings.mode, class_list(settings.classes), parse_chord(settings.exit_chord))
    controls = Controls(zoom=settings.zoom_rate, hud=settings.show_hud)
    clock = FreezableClock()
    osc = None
    if settings.osc_port:
        try:
            osc = OscListener(settings.osc_host, settings.osc_port)
        except OSError as exc:  # the keyboard still works: a taken port must not stop the show
            log.error("no OSC control: cannot listen on udp://%s:%d (%s)", settings.osc_host, settings.osc_port, exc)
    systemd = SystemdNotifier()

    recorder = Recorder(output_dir, frame_log)
    next_hop = time.monotonic() + settings.hop_seconds
    shown = "seed"  # where the picture on screen came from, for the frame log
    shown_keyframe = None  # the server's number of the live keyframe on screen, for the frame log
    try:
        while duration is None or time.monotonic() - started < duration:
            now = time.monotonic()
            if input_file is None and (source is None or not source.alive) and now >= mic_retry_at:
                mic_retry_at = now + MIC_RETRY_S
                if source is not None:  # unplugged: let go of the dead stream before looking again
                    log.warning("the microphone stopped; looking for it again")
                    source.stop()
                    source = None
                try:
                    source = MicrophoneSource(ring, device).start()
                except MicrophoneError as exc:
                    log.warning("%s; showing the attract mode, retrying in %.0f s", exc, MIC_RETRY_S)
            if now >= next_hop:
                next_hop += settings.hop_seconds * max(1, int((now - next_hop) / settings.hop_seconds) + 1)
                if ring.written:
                    client.send_window(ring.latest(), SAMPLE_RATE)
            results, frame = client.poll(0)
            if input_file is not None and client.alive and not source.started:
                log.info("server ready after %.1f s: playing %s", now - started, input_file)
                source.start()
            for r in results:
                show.on_result(r.label, r.confidence, r.top, r.trained, now)
                recorder.label(now - started, r.label, r.confidence)
            show.forced = controls.forced_label
            live = frame is not None and show.on_frame(frame.label, now)
            scene = steer(show.scene(client.alive, now), controls)
            keyframe = False
            if not controls.frozen:  # while frozen, frames keep arriving (the server keeps its pace) unused
                if live and frame.label == scene.label:  # not while another class is forced
                    renderer.show_frame(frame.image, "live", frame.zoom)
                    keyframe, shown, shown_keyframe = True, "live", frame.id
                    recorder.first_live_frame(now - started)
                elif scene.source == "fallback":
                    picture = fallback.frame(scene.label, now)
                    if picture is not None:
                        renderer.show_frame(picture.image, picture.source)
                        keyframe, shown, shown_keyframe = True, picture.source, None
            renderer.set_label(scene.label, scene.confidence, scene.top, scene.status)
            renderer.hud_visible = controls.hud
            render_now = clock(now, controls.frozen)  # every frame, blacked out or not, so a freeze starts on time
            if controls.blackout:
                display.fbo.use()
                display.fbo.clear(0.0, 0.0, 0.0, 1.0)
            else:
                renderer.draw(render_now)
            if keyframe:
                # The renderer zooms by rate x time since the last keyframe, so a new rate set mid-keyframe
                # would rescale the picture at once; set with a keyframe (which starts at zoom 1) it cannot.
                renderer.zoom_rate = controls.zoom
            recorder.frame(now - started, "blackout" if controls.blackout else shown, scene.label, display,
                           None if controls.blackout else shown_keyframe)
            display.swap()
            if recorder.first_image(time.monotonic() - started):
                systemd.notify("READY=1")  # a picture is up: systemd's start-up is over, its watchdog begins
            systemd.ping(now)
            before = controls
            controls = apply_events(controls, display.events(), bindings)
            for osc_address, args in osc.pending() if osc else ():
                try:
                    controls = bindings.on_osc(controls, osc_address, args)
                except ControlError as exc:
                    log.warning("ignored an OSC message: %s", exc)
            if terminated:
                controls = replace(controls, quit=True)
            if controls != before:
                log.info("controls: %s", changed(before, controls))
                steering = (controls.forced_label, controls.intensity, controls.layer)
                if steering != (before.forced_label, before.intensity, before.layer):
                    client.steer(*steering)
            if controls.quit:
                break
            if display.headless:
                time.sleep(max(0.0, 1.0 / HEADLESS_FPS - (time.monotonic() - now)))
            if server_process is not None and server_process.poll() is not None:
                log.error("the local inference server exited with code %s; restarting it", server_process.returncode)
                server_process = start_local_server(settings, address, config_path)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        systemd.notify("STOPPING=1")
        if osc is not None:
            osc.close()
        client.close()
        if source is not None:
            source.stop()
        display.close()
        if server_process is not None:
            server_process.terminate()
            try:
                server_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server_process.kill()
    return recorder.close()
