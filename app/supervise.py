"""What keeps the app's helpers going while the show runs: the local inference server (a child process) and
the sound source (a microphone that may be unplugged, or a recording that waits for the server).

Each is polled once per turn of the main loop with the time; none blocks, sleeps or owns a thread.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from app.capture import FileSource, MicrophoneError, MicrophoneSource, RingBuffer
from app.config import Settings
from common.paths import REPO_ROOT

log = logging.getLogger("hear_and_see.app")

MIC_RETRY_S = 2.0
STOP_TIMEOUT_S = 10.0


def server_command(settings: Settings, bind: str, config_path: str | Path | None) -> list[str]:
    """`hear-and-see serve` with this app's settings. The child reads the same venue file and mode; the
    settings a caller may have set otherwise go by flag name."""
    command = [sys.executable, "-m", "app.cli", "serve", "--bind", bind, "--mode", settings.mode]
    if config_path:
        command += ["--config", str(config_path)]
    if settings.checkpoint:
        command += ["--checkpoint", settings.checkpoint]
    if settings.backbone:
        command += ["--backbone", settings.backbone]
    return command + ["--seeds", settings.seeds_dir, "--dream-size", str(settings.dream_size)]


def _die_with_parent() -> None:
    """In the child, before it runs: Linux sends it SIGTERM when the app dies, however the app dies (a SIGKILL, an
    out-of-memory kill), so no server is ever left running without its show. Elsewhere the exit stack is all."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerSupervisor:
    """A child process, started again whenever it exits: the inference server for a one-machine setup."""

    def __init__(self, command: list[str], name: str = "the local inference server"):
        self.command, self.name = command, name
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> "ServerSupervisor":
        log.info("starting %s: %s", self.name, " ".join(self.command))
        self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, preexec_fn=_die_with_parent)
        return self

    def poll(self) -> None:
        if self.process.poll() is not None:
            log.error("%s exited with code %s; restarting it", self.name, self.process.returncode)
            self.restarts += 1
            self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class MicrophoneSupervisor:
    """Opens the microphone, and looks for it again every `retry_s` while there is none or it has died
    (unplugged, or its sound server gone). Meanwhile the ring holds silence and the show is in attract mode."""

    def __init__(self, ring: RingBuffer, device=None, retry_s: float = MIC_RETRY_S, open_source=MicrophoneSource):
        self.ring, self.device, self.retry_s = ring, device, retry_s
        self._open = open_source
        self.source = None
        self._retry_at = float("-inf")

    def poll(self, now: float, server_ready: bool = True) -> None:
        """`server_ready` is RecordingPlayer's concern: a microphone listens from the start."""
        if self.source is not None and self.source.alive:
            return
        if now < self._retry_at:
            return
        self._retry_at = now + self.retry_s
        if self.source is not None:  # unplugged: let go of the dead stream before looking again
            log.warning("the microphone stopped; looking for it again")
            self.source.stop()
            self.source = None
        try:
            self.source = self._open(self.ring, self.device).start()
        except MicrophoneError as exc:
            log.warning("%s; showing the attract mode, retrying in %.0f s", exc, self.retry_s)

    def stop(self) -> None:
        if self.source is not None:
            self.source.stop()
            self.source = None


class RecordingPlayer:
    """A recording played as if a microphone heard it, from its beginning once the server answers, so a
    demo is heard whole. Opened at once: a bad file is the user's error, said before any window opens."""

    def __init__(self, ring: RingBuffer, path: str | Path, since: float):
        self.path, self.since = path, since
        self.source = FileSource(ring, path)

    def poll(self, now: float, server_ready: bool) -> None:
        if server_ready and not self.source.started:
            log.info("server ready after %.2f s: playing %s", now - self.since, self.path)
            self.source.start()

    def stop(self) -> None:
        self.source.stop()
