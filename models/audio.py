"""Sound in, spectrogram "image" out: the signal chain of the whole project.

Every window that the app sends and every clip that training reads goes through these
functions with these constants, so a checkpoint records them and refuses to load under others.
"""
from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import torch

from common.levels import frame_db
# The rate, the window and the decoder are the app's too (common/sound.py); the signal chain's callers take them
# from here with the rest of it.
from common.sound import (AUDIO_EXTENSIONS, SAMPLE_RATE, WINDOW_SAMPLES, WINDOW_SECONDS,  # noqa: F401
                          AudioFileError, load_audio)

N_SAMPLES = WINDOW_SAMPLES  # 64000 samples in one window
N_FFT = 1024
HOP_LENGTH = 250  # 64 frames per second: a 4 s window is 256 frames wide
N_MELS = 128
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 256
FMIN, FMAX = 20.0, SAMPLE_RATE / 2
TOP_DB = 80.0
# A sound that begins late in a window is heard from its onset: a network that pools over time would otherwise
# average half a second of bark with three seconds of the quiet before it (BENCHMARKS.md, "Onset to label").
ONSET_BELOW_PEAK_DB = 25.0   # the sound starts at the first 10 ms within this many dB of the window's loudest
ONSET_PREROLL_SECONDS = 0.1  # kept before that frame, for the attack
MIN_HEARD_SECONDS = 2.0      # never less of a window than this


def feature_settings() -> dict:
    """What a checkpoint records so that serving computes exactly the training features."""
    return dict(sample_rate=SAMPLE_RATE, n_samples=N_SAMPLES, n_fft=N_FFT, hop_length=HOP_LENGTH,
                n_mels=N_MELS, n_frames=N_FRAMES, fmin=FMIN, fmax=FMAX, top_db=TOP_DB)


def pad_or_trim(audio: np.ndarray | torch.Tensor, length: int = N_SAMPLES):
    """Zero-pad at the end or cut to `length` samples along the last axis (the paper's "padded" set)."""
    n = audio.shape[-1]
    if n >= length:
        return audio[..., :length]
    if isinstance(audio, torch.Tensor):
        return torch.nn.functional.pad(audio, (0, length - n))
    return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, length - n)])


@lru_cache(maxsize=None)
def mel_filters(device: str = "cpu") -> torch.Tensor:
    """librosa's Slaney mel filterbank, (N_MELS, N_FFT // 2 + 1), cached per device."""
    fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)
    return torch.from_numpy(fb).to(device)


def log_mel_spectrogram(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(..., N_SAMPLES) waveform at SAMPLE_RATE -> (..., N_MELS, N_FRAMES) log-mel in dB, floored at max - TOP_DB.

    Values are scaled by 1/40 and shifted so a typical clip sits near [-1, 1]: dB / 40 + 1.
    """
    audio = torch.as_tensor(audio, dtype=torch.float32)
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio.reshape(-1, audio.shape[-1]), N_FFT, HOP_LENGTH, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    power = stft[..., :N_FRAMES].abs() ** 2
    mel = mel_filters(str(audio.device)) @ power
    db = 10.0 * torch.log10(mel.clamp(min=1e-10))
    db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - TOP_DB)
    return (db / 40.0 + 1.0).reshape(*audio.shape[:-1], N_MELS, -1)


def from_onset(window: np.ndarray) -> np.ndarray:
    """(samples,) -> the window from its sound's onset to its end: the quiet before a sound that began late is
    cut, keeping at least MIN_HEARD_SECONDS. Steady noise, silence and a sound that fills the window are
    returned whole, since no 10 ms of them is far below their loudest."""
    frame = SAMPLE_RATE // 100
    if len(window) < frame:
        return window
    db = frame_db(window, frame)
    first_loud = int(np.argmax(db >= db.max() - ONSET_BELOW_PEAK_DB))
    start = max(0, first_loud * frame - int(ONSET_PREROLL_SECONDS * SAMPLE_RATE))
    return window[min(start, max(0, len(window) - int(MIN_HEARD_SECONDS * SAMPLE_RATE))):]


def rms_dbfs(audio: np.ndarray) -> float:
    """Loudness of a window in dB relative to full scale; the energy gate and the dream's zoom use it."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20.0 * np.log10(max(rms, 1e-10))
