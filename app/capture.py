"""Sound in: a microphone (or a file played in real time) fills a ring buffer with the newest 4 seconds at 16 kHz.

The audio callback runs on PortAudio's thread and does only three things: take the first channel,
resample it to the model's rate, write it to the ring. Everything else reads `RingBuffer.latest()`.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import soxr

from common.errors import UserError
from common.levels import frame_db
from common.sound import AUDIO_EXTENSIONS, SAMPLE_RATE, WINDOW_SAMPLES, AudioFileError, load_audio

FILE_BLOCK_SECONDS = 0.05     # a file source delivers blocks this long, like a sound card would
STALL_SECONDS = 1.0           # a microphone whose callback has been silent this long is taken for unplugged
PAUSE_SECONDS = 2.0           # between the recordings of a folder, so each is heard on its own
ONSET_CONTEXT_SECONDS = 1.0   # a sound begins against the second before it...
ONSET_NEWEST_SECONDS = 0.05   # ...when its newest 50 ms (one block of a file source) peaks
ONSET_RISE_DB = 20.0          # this much above that second's typical 10 ms,
ONSET_FLOOR_DBFS = -55.0      # and louder than this: a quiet room's hiss never begins

log = logging.getLogger("hear_and_see.capture")


class MicrophoneError(UserError, RuntimeError):
    """No usable input device; the message says which and how to list the others."""


class RingBuffer:
    """The newest `size` samples. One writer (the audio thread), any readers; a lock keeps writes whole."""

    def __init__(self, size: int = WINDOW_SAMPLES):
        self._data = np.zeros(size, dtype=np.float32)
        self._end = 0          # where the next sample goes
        self.written = 0       # samples written since start: tells readers whether anything new arrived
        self._lock = threading.Lock()

    def write(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32)
        with self._lock:
            self.written += len(samples)
            samples = samples[-len(self._data):]
            first = min(len(samples), len(self._data) - self._end)
            self._data[self._end:self._end + first] = samples[:first]
            self._data[:len(samples) - first] = samples[first:]
            self._end = (self._end + len(samples)) % len(self._data)

    def latest(self) -> np.ndarray:
        """A copy of the buffer, oldest sample first (zeros where nothing was written yet)."""
        with self._lock:
            return np.concatenate([self._data[self._end:], self._data[:self._end]])


def sound_began(window: np.ndarray) -> bool:
    """Whether a sound begins in the newest ONSET_NEWEST_SECONDS of `window` (the ring, newest sample last),
    against the ONSET_CONTEXT_SECONDS before them. Levels are of 10 ms frames, as models/audio.from_onset
    reads them."""
    frame = SAMPLE_RATE // 100
    newest = int(ONSET_NEWEST_SECONDS * SAMPLE_RATE) // frame
    n = min(len(window) // frame, newest + int(ONSET_CONTEXT_SECONDS * SAMPLE_RATE) // frame)
    if n <= newest:
        return False
    db = frame_db(window[len(window) - n * frame:], frame)
    peak, before = db[-newest:].max(), np.median(db[:-newest])
    return bool(peak >= ONSET_FLOOR_DBFS and peak >= before + ONSET_RISE_DB)


class MicrophoneSource:
    """A sounddevice InputStream at the device's own rate, resampled on the fly into the ring."""

    def __init__(self, ring: RingBuffer, device: int | str | None = None):
        sd = _portaudio()
        self.ring = ring
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            raise MicrophoneError(f"no input device {device if device is not None else '(default)'}: {exc}; "
                                  f"list them with `hear-and-see devices`") from exc
        self.device_rate = int(info["default_samplerate"])
        self.name = info["name"]
        self._resampler = soxr.ResampleStream(self.device_rate, SAMPLE_RATE, 1, dtype="float32")
        self.overflows = 0
        self._stream = sd.InputStream(device=device, channels=1, samplerate=self.device_rate,
                                      dtype="float32", callback=self._callback)

    def _callback(self, indata, frames, time_info, status) -> None:
        self._last_callback = time.monotonic()
        if status.input_overflow:
            self.overflows += 1
        self.ring.write(self._resampler.resample_chunk(indata[:, 0]))

    def start(self) -> "MicrophoneSource":
        self._last_callback = time.monotonic()
        self._stream.start()
        log.info("listening on %s at %d Hz", self.name, self.device_rate)
        return self

    @property
    def alive(self) -> bool:
        """A live microphone calls back every few milliseconds; an unplugged one may leave its stream
        'active' but silent for ever, so silence from the callback counts as death too."""
        return self._stream.active and time.monotonic() - self._last_callback < STALL_SECONDS

    def stop(self) -> None:
        # abort, not stop: a stream whose device is gone may never drain
        self._stream.abort(ignore_errors=True)
        self._stream.close(ignore_errors=True)


class FileSource:
    """A recording (or a folder of them, in name order with a pause between) played into the ring at
    real-time pace, as if a microphone heard it; loops by default. A recording that cannot be played is an
    AudioFileError, raised here, before anything starts."""

    def __init__(self, ring: RingBuffer, path: str | Path, loop: bool = True):
        self.ring, self.path, self.loop = ring, Path(path), loop
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
            if not files:
                raise AudioFileError(f"{self.path}: no recordings ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
            self.samples = np.concatenate([part for f in files for part in (load_audio(f), pause)])
        else:
            self.samples = load_audio(self.path)
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="file-source", daemon=True)

    def start(self) -> "FileSource":
        self._thread.start()
        return self

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _play(self) -> None:
        block = int(FILE_BLOCK_SECONDS * SAMPLE_RATE)
        start, sent = time.monotonic(), 0
        while not self._stop.is_set():
            position = sent % len(self.samples)
            if sent and position == 0 and not self.loop:
                break
            chunk = self.samples[position:position + block]
            self.ring.write(chunk)
            sent += len(chunk)
            # Pace against the clock, not the previous block, so the source never drifts from real time.
            self._stop.wait(max(0.0, start + sent / SAMPLE_RATE - time.monotonic()))
        self.finished.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)


def _portaudio():
    """sounddevice with a fresh PortAudio: its device list is fixed at initialisation, so a microphone
    plugged in (or a sound server started) after that is only seen by a new one."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()
    return sd


def list_input_devices() -> list[dict]:
    sd = _portaudio()
    return [dict(index=i, name=d["name"], channels=d["max_input_channels"], rate=d["default_samplerate"])
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
