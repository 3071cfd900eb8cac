"""Examples of a sound to teach, taken from the installation's own microphone: a countdown, then each take cut at the
sound's onset by the app's detector (capture.sound_began) and ended when the sound has died away, its level shown as
it is made. The takes are written as wav files; checking and storing them is the library's work (models/taught.py),
which a child process does, so this process (the app's side) never loads torch.
"""
from __future__ import annotations

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
POLL_S = 0.02


class TakeError(UserError, RuntimeError):
    """A take that could not be made (no sound came); the message says what to do."""


def meter(dbfs: float, width: int = 30) -> str:
    """A level as a bar from -60 to 0 dBFS."""
    filled = int(np.clip((dbfs + 60) / 60, 0, 1) * width)
    return f"[{'#' * filled}{' ' * (width - filled)}] {dbfs:6.1f} dBFS"


def level(samples: np.ndarray) -> float:
    return float(frame_db(samples, SAMPLE_RATE // 100).max(initial=-200.0)) if len(samples) >= 160 else -200.0


def take_one(ring: RingBuffer, show: Callable[[str], None], clock=time.monotonic, sleep=time.sleep) -> np.ndarray:
    """Wait for a sound to begin in the ring, then keep it until it has died away (or MAX_TAKE_S): the sound from
    just before its onset. Shows the level meanwhile."""
    deadline = clock() + WAIT_FOR_SOUND_S
    while not sound_began(ring.latest()):
        if clock() > deadline:
            raise TakeError(f"no sound in {WAIT_FOR_SOUND_S:.0f} s; is the microphone on (`hear-and-see devices`)?")
        show(meter(level(ring.latest()[-SAMPLE_RATE // 10:])))
        sleep(POLL_S)
    began_at, written = clock(), ring.written
    while clock() - began_at < MAX_TAKE_S:
        sleep(POLL_S)
        heard = ring.latest()[-(ring.written - written + int(PREROLL_S * SAMPLE_RATE)):]
        show(meter(level(heard[-SAMPLE_RATE // 10:])))
        newest = heard[-int(DIED_AWAY_S * SAMPLE_RATE):]
        if len(heard) > 2 * len(newest) and level(newest) < level(heard) - DIED_AWAY_DB:
            break
    return ring.latest()[-min(len(ring.latest()), ring.written - written + int(PREROLL_S * SAMPLE_RATE)):]


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
