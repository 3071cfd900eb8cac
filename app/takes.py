"""Examples of a sound to teach, taken from the installation's own microphone: each take cut at the sound's onset by
the app's detector (capture.sound_began) and ended when the sound has died away, its level shown as it is made. The
command line (`teach --record`) and the console both take them with `Take`; a console's takes wait in a `Draft`, a
folder of their own, until they are taught. Checking and storing them is the library's work (models/taught.py),
which a child process does (`teach_in_child`), so this process (the app's side) never loads torch.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from app.capture import SAMPLE_RATE, MicrophoneSource, RingBuffer, sound_began
from common.errors import UserError
from common.levels import frame_db

COUNTDOWN_S = 3
WAIT_FOR_SOUND_S = 15.0   # a take with no sound in this long is given up
MAX_TAKE_S = 4.0          # the ear's window: a take is never longer
PREROLL_S = 0.2           # kept before the onset, for the attack
DIED_AWAY_DB = 30.0       # a take ends when its newest 300 ms are this far below its loudest ...
DIED_AWAY_S = 0.3
POLL_S = 0.02             # the detector reads the newest 50 ms: look more often than that
TEACH_TIMEOUT_S = 300.0   # the child that checks and stores a sound (it loads torch, then hears nothing)


class TakeError(UserError, RuntimeError):
    """A take that could not be made (no sound came); the message says what to do."""


def meter(dbfs: float, width: int = 30) -> str:
    """A level as a bar from -60 to 0 dBFS."""
    filled = int(np.clip((dbfs + 60) / 60, 0, 1) * width)
    return f"[{'#' * filled}{' ' * (width - filled)}] {dbfs:6.1f} dBFS"


def level(samples: np.ndarray) -> float:
    return float(frame_db(samples, SAMPLE_RATE // 100).max(initial=-200.0)) if len(samples) >= 160 else -200.0


class Take:
    """One example being taken from `ring`: after `countdown` seconds, wait for a sound to begin, then keep it until
    it has died away (or MAX_TAKE_S), from just before its onset. `poll` looks once and never blocks, so the caller
    decides how to wait; `state` ("countdown", "waiting", "recording", "done") and `level` (dBFS, the newest 100 ms)
    say how it goes, `samples` is the take once done."""

    def __init__(self, ring: RingBuffer, countdown: float = 0.0, clock=time.monotonic):
        self.ring, self.clock = ring, clock
        self.starts_at = clock() + countdown
        self.deadline = self.starts_at + WAIT_FOR_SOUND_S
        self.began_at, self.written = None, 0
        self.level = -200.0
        self.samples: np.ndarray | None = None

    @property
    def state(self) -> str:
        if self.samples is not None:
            return "done"
        if self.began_at is not None:
            return "recording"
        return "countdown" if self.clock() < self.starts_at else "waiting"

    def poll(self) -> np.ndarray | None:
        """The take once it is done, else None; TakeError when no sound began in WAIT_FOR_SOUND_S."""
        if self.samples is not None:
            return self.samples
        window, now = self.ring.latest(), self.clock()
        if self.began_at is None:
            self.level = level(window[-SAMPLE_RATE // 10:])
            if now < self.starts_at or not sound_began(window):
                if now > self.deadline:
                    raise TakeError(f"no sound in {WAIT_FOR_SOUND_S:.0f} s; is the microphone on, and the sound "
                                    f"near enough to it?")
                return None
            self.began_at, self.written = now, self.ring.written
            return None
        heard = window[-min(len(window), self.ring.written - self.written + int(PREROLL_S * SAMPLE_RATE)):]
        self.level = level(heard[-SAMPLE_RATE // 10:])
        newest = heard[-int(DIED_AWAY_S * SAMPLE_RATE):]
        died_away = len(heard) > 2 * len(newest) and level(newest) < level(heard) - DIED_AWAY_DB
        if died_away or now - self.began_at >= MAX_TAKE_S:
            self.samples = heard
        return self.samples

    def run(self, show: Callable[["Take"], None] = lambda take: None, sleep=time.sleep) -> np.ndarray:
        """Poll until done (blocking): the take."""
        while (samples := self.poll()) is None:
            show(self)
            sleep(POLL_S)
        return samples


def take_one(ring: RingBuffer, show: Callable[[str], None], clock=time.monotonic, sleep=time.sleep) -> np.ndarray:
    """A take from the ring, its level shown as a meter line meanwhile."""
    return Take(ring, clock=clock).run(lambda take: show(meter(take.level)), sleep)


def record_takes(n: int, folder: Path, device=None, say: Callable[[str], None] = print,
                 show: Callable[[str], None] = lambda line: None) -> list[Path]:
    """`n` takes from the microphone, written to `folder` as take_01.wav ...; `say` tells the person what to do,
    `show` draws the level meter."""
    import soundfile

    ring = RingBuffer(int(2 * MAX_TAKE_S * SAMPLE_RATE))
    source = MicrophoneSource(ring, device).start()
    paths = []
    try:
        for second in range(COUNTDOWN_S, 0, -1):
            say(f"starting in {second} ...")
            time.sleep(1.0)
        for i in range(1, n + 1):
            say(f"take {i} of {n}: make the sound now")
            take = take_one(ring, show)
            paths.append(folder / f"take_{i:02d}.wav")
            soundfile.write(paths[-1], take, SAMPLE_RATE)
            say(f"take {i} of {n}: {len(take) / SAMPLE_RATE:.1f} s, loudest {level(take):.0f} dBFS")
            time.sleep(0.5)  # the sound's tail must not begin the next take
    finally:
        source.stop()
    return paths


def teach_in_child(name: str, takes: list[Path], picture: str | None, as_: str | None, taught_dir: Path,
                   timeout: float = TEACH_TIMEOUT_S) -> str:
    """Check and store the takes as taught sound `name` with the library (models/taught.teach, through the command
    line), in a child process: this one stays free of torch, and a take is judged by the same rules as a file.
    Returns what the child said; its refusal comes back as a TaughtError with its one line."""
    from models.taught import TaughtError

    command = [sys.executable, "-m", "app.cli", "teach", name, *map(str, takes), "--taught-dir", str(taught_dir)]
    command += ["--picture", picture] if picture else []
    command += ["--as", as_] if as_ else []
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"teaching {name} took over {timeout:.0f} s and was stopped") from None
    said = done.stderr.strip().splitlines()
    if done.returncode == 2 and said:
        raise TaughtError(said[-1].removeprefix("hear-and-see teach: "))
    if done.returncode != 0:
        raise RuntimeError(f"teaching {name} failed (exit status {done.returncode}): {said[-1] if said else ''}")
    return done.stdout.strip()


class Draft:
    """The examples (and the picture) of a sound being taught from the console, waiting in a folder of their own
    outside the taught sounds' folder, so that nothing half-made is ever heard. One take at a time; `progress` is
    what the page shows of the take being made."""

    def __init__(self):
        self._folder: tempfile.TemporaryDirectory | None = None
        self.examples: list[dict] = []   # {"id", "path", "seconds", "dbfs", "problem"}
        self.picture: str | None = None  # a file in the folder, or seed:CLASS
        self.take: Take | None = None
        self._next_id = 1
        self.lock = threading.Lock()     # one take, save or change at a time

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="hear-and-see-draft-")
        return Path(self._folder.name)

    def progress(self) -> dict | None:
        take = self.take
        if take is None:
            return None
        return {"state": take.state, "level": round(max(take.level, -100.0), 1),
                "seconds_left": max(0, int(np.ceil(take.starts_at - take.clock())))}

    def add(self, samples: np.ndarray, problem: str | None) -> dict:
        import soundfile

        path = self.folder / f"take_{self._next_id:02d}.wav"
        soundfile.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
        example = {"id": self._next_id, "path": path, "seconds": round(len(samples) / SAMPLE_RATE, 2),
                   "dbfs": round(level(samples), 1), "problem": problem}
        self._next_id += 1
        self.examples.append(example)
        return example

    def find(self, example_id) -> dict | None:
        return next((e for e in self.examples if e["id"] == example_id), None)

    def drop(self, example: dict) -> None:
        self.examples.remove(example)
        example["path"].unlink(missing_ok=True)

    def clear(self) -> None:
        for e in list(self.examples):
            self.drop(e)
        if self.picture and not self.picture.startswith("seed:"):
            Path(self.picture).unlink(missing_ok=True)
        self.picture = None
        self._next_id = 1

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
