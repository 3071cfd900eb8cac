"""Hear what the classifier hears: climb a class's log-probability in the sound itself, the 16 kHz waveform,
through each classifier's own front end (the Lite0 ear's log-mel, the mn04 ear's 32 kHz resampling and its
own log-mel), so what is written is exactly what was optimised and no spectrogram has to be turned back into
sound.

    hear-and-see auralize rooster -o rooster.wav [--checkpoint PATH] [--normalize]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models import audio, efficientat
from models.model import Ensemble, TaggingClassifier

STEPS = 100  # gradient steps; the shipped ear hears dog, rooster and church_bells at p >= 0.99 after 40
STEP_SIZE = 0.05  # per step, as a fraction of the sound's mean amplitude, after normalising the gradient
START_DBFS = -30.0  # rms of the starting noise: a quiet sound, well above the gate's silence (-60 dBFS)
JITTER_SAMPLES = audio.SAMPLE_RATE // 4  # random shift in time each step: a sound is the same sound a moment later
# Random gain each step, up to this many dB either way: a sound is the same sound nearer the microphone, and both
# ears' features are absolute levels, so without it the class is heard only at the level it was found at
# (measured: a Lite0 dog at p = 1.00 fell to 0.05 when peak-normalised for listening).
GAIN_JITTER_DB = 24.0
PEAK = 0.99


def auralize(model, class_name: str, steps: int = STEPS, step_size: float = STEP_SIZE, seed: int = 0) -> np.ndarray:
    """A waveform (N_SAMPLES float32 at SAMPLE_RATE, peak below 1) that `model` hears as `class_name`."""
    if class_name not in model.class_names:
        raise ValueError(f"{class_name!r} is not a class of this model; choose one of {', '.join(model.class_names)}")
    return waveform_for(model, model.class_names.index(class_name), steps, step_size, seed).numpy()


def waveform_for(model, index: int, steps: int = STEPS, step_size: float = STEP_SIZE, seed: int = 0) -> torch.Tensor:
    """Gradient ascent from quiet noise on the waveform: (N_SAMPLES,) at SAMPLE_RATE, peak at most PEAK."""
    model = model.eval()
    device = next(model.parameters()).device
    # Every member must hear the class: the ensemble's mean probability stops climbing once one member is sure
    # (measured: p = 0.46-0.50 with one of two members fooled), while each member's own log-probability does not.
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    g = torch.Generator().manual_seed(seed)
    wave = (10.0 ** (START_DBFS / 20.0) * torch.randn(1, audio.N_SAMPLES, generator=g)).to(device)
    for _ in range(steps):
        shift = int(torch.randint(-JITTER_SAMPLES, JITTER_SAMPLES + 1, (1,), generator=g))
        gain = 10.0 ** (float(torch.empty(1).uniform_(-GAIN_JITTER_DB, GAIN_JITTER_DB, generator=g)) / 20.0)
        with torch.enable_grad():  # callers may sit in no_grad
            x = torch.roll(wave, shift, -1).requires_grad_(True)
            loss = sum(m(differentiable_inputs(m, x * gain)).log_softmax(-1)[0, index] for m in members)
            (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            grad = torch.roll(grad, -shift, -1)
            wave = wave + grad * (step_size * wave.abs().mean() / (grad.abs().mean() + 1e-12))
            wave = wave.clamp(-PEAK, PEAK)
    return wave[0].detach().cpu()


def differentiable_inputs(classifier, waves: torch.Tensor) -> torch.Tensor:
    """What `classifier.inputs` makes of (B, N_SAMPLES) waveforms, with gradients back to them. The mn04 ear
    resamples to 32 kHz with soxr, outside autograd; the band-limited interpolation (zero-padding the spectrum)
    is the same resampling but for soxr's transition band, and `heard_as` checks the result through soxr."""
    if isinstance(classifier, TaggingClassifier):
        n = waves.shape[-1]
        up = n * efficientat.MODEL_RATE // audio.SAMPLE_RATE
        return torch.fft.irfft(torch.fft.rfft(waves), n=up) * (up / n)
    return classifier.inputs(waves)  # the log-mel spectrogram, computed in torch


def heard_as(model, wave: np.ndarray, class_name: str) -> float:
    """The probability `model` gives `class_name` for `wave`, heard as the app hears it (its `predict`)."""
    return float(model.predict(wave)[0, model.class_names.index(class_name)])


def auralize_to_file(class_name: str, output: str | Path, checkpoint=None, steps: int = STEPS, seed: int = 0,
                     normalize: bool = False) -> str:
    """Write what the classifier most believes is `class_name` to `output` (wav); returns what was written."""
    import soundfile

    from common.errors import UserError
    from models.model import load_model

    model = load_model(checkpoint)
    if class_name not in model.class_names:
        raise UserError(f"{class_name!r} is not a class of this model; choose one of {', '.join(model.class_names)}")
    wave = auralize(model, class_name, steps, seed=seed)
    if normalize:
        wave = (wave * (0.89 / max(float(np.abs(wave).max()), 1e-9))).astype(np.float32)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(output, wave, audio.SAMPLE_RATE)
    return (f"wrote {output} ({audio.WINDOW_SECONDS:g} s, {audio.rms_dbfs(wave):.0f} dBFS rms); the classifier hears "
            f"it as {class_name} with p = {heard_as(model, wave, class_name):.2f}")
