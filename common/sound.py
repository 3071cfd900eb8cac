"""Sound as the whole project takes it in: its rate, its window, the recordings it reads, and the one decoder.

The app (which must start without torch or librosa) and the model side (training, evaluation, the server's
tools) both decode here, so a recording is the same samples everywhere. soundfile's own libsndfile reads
wav, flac, ogg and mp3; soxr resamples at the quality librosa.load uses ("soxr_hq").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import soxr

from common.errors import UserError

SAMPLE_RATE = 16_000                              # every waveform in the project, from microphone to checkpoint
WINDOW_SECONDS = 4.0                              # what one classification hears
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")


class AudioFileError(UserError, ValueError):
    """A recording that cannot be used; the message names the file and says what is wrong with it."""


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode wav/flac/mp3/ogg to mono float32 at `sr` (channels averaged); AudioFileError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such audio file")
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError, OSError) as exc:  # libsndfile's errors are RuntimeErrors
        raise AudioFileError(f"{path}: cannot read it as audio ({type(exc).__name__}: {exc})") from exc
    mono = samples.mean(axis=1)
    if mono.size == 0 or not np.all(np.isfinite(mono)):
        raise AudioFileError(f"{path}: empty or non-finite audio")
    if rate != sr:
        # ceil(n * sr / rate) samples, as librosa.load gives: soxr alone may give one fewer, and the waveform
        # cache and every checkpoint were made from librosa's length
        length = -(-len(mono) * sr // rate)
        mono = soxr.resample(mono, rate, sr, quality="HQ")
        mono = np.pad(mono[:length], (0, max(0, length - len(mono))))
    return np.ascontiguousarray(mono, dtype=np.float32)
