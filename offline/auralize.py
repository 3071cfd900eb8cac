"""Hear what the classifier hears: climb a class's logit in the classifier's own input, the log-mel spectrogram,
then turn that spectrogram back into sound (Griffin-Lim through librosa's mel inversion).

    hear-and-see auralize rooster -o rooster.wav [--checkpoint PATH] [--normalize]
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from models import audio

STEPS = 300  # gradient steps
STEP_SIZE = 0.02  # per step, in scaled log-mel units (1 unit = 40 dB), after normalising the gradient
JITTER_FRAMES = 16  # random shift in time each step: a sound is the same sound a moment later
GRIFFIN_LIM_ITERATIONS = 64
START_LEVEL = -0.2  # scaled log-mel of the starting noise: -48 dB, a quiet room as the features see it


def auralize(model, class_name: str, steps: int = STEPS, step_size: float = STEP_SIZE, seed: int = 0) -> np.ndarray:
    """A waveform (N_SAMPLES float32 at SAMPLE_RATE, peak below 1) that `model` hears as `class_name`."""
    if class_name not in model.class_names:
        raise ValueError(f"{class_name!r} is not a class of this model; choose one of {', '.join(model.class_names)}")
    mel = spectrogram_for(model, model.class_names.index(class_name), steps, step_size, seed)
    return mel_to_waveform(mel)


def spectrogram_for(model, index: int, steps: int = STEPS, step_size: float = STEP_SIZE, seed: int = 0) -> torch.Tensor:
    """Gradient ascent from quiet noise on the scaled log-mel input: (N_MELS, N_FRAMES) in [-1, 1]."""
    model = model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    mel = (START_LEVEL + 0.1 * torch.randn(1, audio.N_MELS, audio.N_FRAMES, generator=g)).to(device)
    for i in range(steps):
        shift = int(torch.randint(-JITTER_FRAMES, JITTER_FRAMES + 1, (1,), generator=g))
        with torch.enable_grad():  # callers may sit in no_grad
            x = torch.roll(mel, shift, -1).requires_grad_(True)
            logits = model(x)
            loss = logits[0, index] - logits[0].mean()  # this class, not every class at once
            (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            grad = torch.roll(grad, -shift, -1)
            mel = mel + grad * (step_size / (grad.abs().mean() + 1e-8))
            if i % 4 == 0:  # a little smoothing keeps it sound-like rather than adversarial speckle
                mel = F.avg_pool2d(mel[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
            mel = mel.clamp(-1.0, 1.0)
    return mel[0].detach().cpu()


def mel_to_waveform(mel: torch.Tensor | np.ndarray) -> np.ndarray:
    """Undo audio.log_mel_spectrogram's scaling (dB / 40 + 1) and invert the mel power spectrogram."""
    import librosa

    db = (np.asarray(mel, dtype=np.float64) - 1.0) * 40.0
    db = np.concatenate([db, db[:, -1:]], axis=1)  # the STFT of N_SAMPLES has one frame more than the model takes
    power = 10.0 ** (db / 10.0)
    wave = librosa.feature.inverse.mel_to_audio(power, sr=audio.SAMPLE_RATE, n_fft=audio.N_FFT,
                                                hop_length=audio.HOP_LENGTH, window="hann", center=True,
                                                power=2.0, n_iter=GRIFFIN_LIM_ITERATIONS, fmin=audio.FMIN,
                                                fmax=audio.FMAX, length=audio.N_SAMPLES)
    # The features are absolute levels (dB, not dB below the peak), so the classifier only hears the class at the
    # level it was found at: keep that level, only pulling the peak down if it would clip.
    peak = float(np.abs(wave).max())
    return (wave * (0.99 / peak) if peak > 0.99 else wave).astype(np.float32)


def heard_as(model, wave: np.ndarray, class_name: str) -> float:
    """The probability `model` gives `class_name` for `wave`: whether the class survives the trip back to sound."""
    with torch.no_grad():
        mel = audio.log_mel_spectrogram(torch.from_numpy(wave))[None]
        return model(mel).softmax(-1)[0, model.class_names.index(class_name)].item()
