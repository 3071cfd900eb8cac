"""The app's main loop: every hop send the newest 4 s to the server, take back labels and dream frames, draw.

The loop draws at display rate whatever arrives; audio capture runs on its own thread and the server in
its own process, so a slow dream never stalls the picture.
"""
from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.capture import SAMPLE_RATE, FileSource, MicrophoneError, MicrophoneSource, RingBuffer
from app.client import InferenceClient
from app.config import Settings
from app.modes import ShowState
from visualizer.fallback import FallbackPlayer
from visualizer.renderer import Renderer
from visualizer.window import open_display, save_contact_sheet

log = logging.getLogger("hear_and_see.app")

HEADLESS_FPS = 30            # headless output is paced like a window would be, in real time
SAVED_FRAMES_PER_SECOND = 2  # how often the headless run keeps what the window would have shown
MIC_RETRY_S = 2.0
SERVER_START_TIMEOUT_S = 120.0


@dataclass
class RunReport:
    output_dir: Path | None
    frames_drawn: int = 0
    frames_by_source: dict = field(default_factory=dict)
    labels: list = field(default_factory=list)       # (seconds since start, label, confidence)
    first_live_frame_s: float | None = None
    first_image_s: float | None = None


def free_tcp_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def start_local_server(settings: Settings, bind: str) -> subprocess.Popen:
    """The inference server as a child process, for a one-machine setup (`make run`)."""
    cmd = [sys.executable, "-m", "app.cli", "serve", "--bind", bind]
    if settings.checkpoint:
        cmd += ["--checkpoint", settings.checkpoint]
    if settings.backbone:
        cmd += ["--backbone", settings.backbone]
    cmd += ["--seeds", settings.seeds_dir, "--dream-size", str(settings.dream_size)]
    log.info("starting a local inference server: %s", " ".join(cmd))
    return subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent)


def open_source(ring: RingBuffer, input_file: str | None, device):
    if input_file is not None:
        return FileSource(ring, input_file).start()
    return MicrophoneSource(ring, device).start()


def run(settings: Settings, input_file: str | None = None, device=None, headless: bool | None = None,
        duration: float | None = None, output_dir: str | Path | None = None,
        frame_log: str | Path | None = None) -> RunReport:
    started = time.monotonic()
    server_process = None
    address = settings.server
    if address == "auto":
        address = free_tcp_address()
        server_process = start_local_server(settings, address)

    ring = RingBuffer()
    source, source_retry_at = None, 0.0
    if input_file is not None:
        source = open_source(ring, input_file, device)  # a bad file is the user's error: say it and stop

    display = open_display(settings.width, settings.height, fullscreen=settings.fullscreen, headless=headless)
    renderer = Renderer(display.ctx, settings.width, settings.height)
    renderer.hud_visible = settings.show_hud
    renderer.palette, renderer.vignette = settings.palette, settings.vignette
    fallback = FallbackPlayer(settings.prerendered_dir, settings.seeds_dir)
    show = ShowState(settings.hold_seconds)
    client = InferenceClient(address, name=settings.mode, classes=settings.classes)

    output = Path(output_dir) if output_dir else None
    if output:
        (output / "frames").mkdir(parents=True, exist_ok=True)
    report = RunReport(output)
    frame_log_file = open(frame_log, "w", encoding="utf-8") if frame_log else None
    if frame_log_file:
        frame_log_file.write("seconds\tsource\tclass\tmean_luminance\n")
    saved, next_save, next_hop = [], 0.0, time.monotonic() + settings.hop_seconds
    shown = "seed"  # where the picture on screen came from, for the frame log
    wait_for_server = server_process is not None
    try:
        while duration is None or time.monotonic() - started < duration:
            now = time.monotonic()
            if source is None or not source.alive:
                if now >= source_retry_at:
                    source_retry_at = now + MIC_RETRY_S
                    try:
                        source = open_source(ring, None, device)
                    except MicrophoneError as exc:
                        log.warning("%s; showing the attract mode, retrying in %.0f s", exc, MIC_RETRY_S)
            if now >= next_hop:
                next_hop += settings.hop_seconds * max(1, int((now - next_hop) / settings.hop_seconds) + 1)
                if ring.written:
                    client.send_window(ring.latest(), SAMPLE_RATE)
            results, frame = client.poll(0)
            if wait_for_server and client.alive:
                wait_for_server = False
                log.info("server ready after %.1f s", now - started)
            for r in results:
                show.on_result(r.label, r.confidence, r.top, r.trained, now)
                report.labels.append((round(now - started, 2), r.label, round(r.confidence, 3)))
            if frame is not None and show.on_frame(frame.label, now):
                renderer.show_frame(frame.image, "live")
                shown = "live"
                if report.first_live_frame_s is None:
                    report.first_live_frame_s = now - started
                    log.info("first live dream frame after %.1f s", report.first_live_frame_s)
            scene = show.scene(client.alive, now)
            if scene.source == "fallback":
                picture = fallback.frame(scene.label, now)
                if picture is not None:
                    renderer.show_frame(picture.image, picture.source)
                    shown = picture.source
            renderer.set_label(scene.label, scene.confidence, scene.top, scene.status)
            renderer.draw(now)
            display.swap()
            if report.first_image_s is None:
                report.first_image_s = time.monotonic() - started
            report.frames_drawn += 1
            report.frames_by_source[shown] = report.frames_by_source.get(shown, 0) + 1
            pixels = None
            if frame_log_file or (output and now - started >= next_save):
                pixels = display.read_pixels()
            if frame_log_file:
                frame_log_file.write(f"{now - started:.3f}\t{shown}\t{scene.label or '-'}\t{pixels.mean():.1f}\n")
            if output and now - started >= next_save:
                next_save += 1.0 / SAVED_FRAMES_PER_SECOND
                path = output / "frames" / f"{len(saved):05d}.png"
                display.save_png(pixels, path)
                saved.append((path, pixels))
            if any(e.type == "quit" for e in display.events()):
                break
            if display.headless:
                time.sleep(max(0.0, 1.0 / HEADLESS_FPS - (time.monotonic() - now)))
            if server_process is not None and server_process.poll() is not None:
                log.error("the local inference server exited with code %s; restarting it", server_process.returncode)
                server_process = start_local_server(settings, address)
    finally:
        client.close()
        if source is not None:
            source.stop()
        if frame_log_file:
            frame_log_file.close()
        display.close()
        if server_process is not None:
            server_process.terminate()
            try:
                server_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server_process.kill()
    if output:
        save_contact_sheet([p for _, p in saved][:: max(1, len(saved) // 24)], output / "contact_sheet.png")
        (output / "timeline.json").write_text(json.dumps(
            {"labels": report.labels, "frames_drawn": report.frames_drawn,
             "frames_by_source": report.frames_by_source, "first_image_s": report.first_image_s,
             "first_live_frame_s": report.first_live_frame_s}, indent=1))
    return report
