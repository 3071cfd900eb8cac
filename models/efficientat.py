"""EfficientAT's mn04: a MobileNetV3 (width 0.4) trained on AudioSet, and the front end its weights expect.

Schmid, Koutini, Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN Knowledge Distillation"
(ICASSP 2023); MIT licence, `models/weights/LICENSE-EfficientAT`. Written from the published layer table
(models/weights/README.md); the state dict loads with strict key matching.

The project's signal chain stays at 16 kHz (ESC-50 here is 16 kHz, and capture, wire and training must see
one band): `to_model_rate` resamples it to the 32 kHz the weights were trained at before `LogMel`, so bands above
8 kHz are empty.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import soxr
import torch
from torch import nn

MODEL_RATE = 32_000
PREEMPHASIS = 0.97
N_FFT, WIN_LENGTH, HOP_LENGTH = 1024, 800, 320   # 10 ms frames
N_MELS, FMIN, FMAX = 128, 0.0, 15_000.0
LOG_OFFSET, SHIFT, SCALE = 1e-5, 4.5, 5.0        # input = (ln(mel + 1e-5) + 4.5) / 5
EMBED_DIM = 384
NAME = "efficientat_mn04"

WEIGHTS_DIR = Path(__file__).parent / "weights"
PRETRAINED_WEIGHTS = WEIGHTS_DIR / "efficientat_mn04_as.pt"
AUDIOSET_LABELS = WEIGHTS_DIR / "audioset_class_labels_indices.csv"

# features[i]: (in, expanded, out, kernel, stride, SE squeeze channels or 0, activation)
BLOCKS = [
    (8, 8, 8, 3, 1, 0, "relu"),
    (8, 24, 16, 3, 2, 0, "relu"),
    (16, 32, 16, 3, 1, 0, "relu"),
    (16, 32, 16, 5, 2, 8, "relu"),
    (16, 48, 16, 5, 1, 16, "relu"),
    (16, 48, 16, 5, 1, 16, "relu"),
    (16, 96, 32, 3, 2, 0, "hardswish"),
    (32, 80, 32, 3, 1, 0, "hardswish"),
    (32, 72, 32, 3, 1, 0, "hardswish"),
    (32, 72, 32, 3, 1, 0, "hardswish"),
    (32, 192, 48, 3, 1, 48, "hardswish"),
    (48, 272, 48, 3, 1, 72, "hardswish"),
    (48, 272, 64, 5, 2, 72, "hardswish"),
    (64, 384, 64, 5, 1, 96, "hardswish"),
    (64, 384, 64, 5, 1, 96, "hardswish"),
]


def feature_settings(sample_rate: int) -> dict:
    """What a checkpoint records so that serving computes exactly the training features."""
    return dict(sample_rate=sample_rate, model_rate=MODEL_RATE, preemphasis=PREEMPHASIS, n_fft=N_FFT,
                win_length=WIN_LENGTH, hop_length=HOP_LENGTH, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)


@lru_cache(maxsize=1)
def audioset_labels() -> tuple[str, ...]:
    with open(AUDIOSET_LABELS, newline="") as f:
        return tuple(row["display_name"] for row in csv.DictReader(f))


# --- front end ---------------------------------------------------------------------------------------
def to_model_rate(waves: np.ndarray, rate: int) -> np.ndarray:
    """(..., samples) float audio at `rate` -> the same at MODEL_RATE (soxr's high quality)."""
    waves = np.asarray(waves, dtype=np.float32)
    if rate == MODEL_RATE:
        return waves
    flat = waves.reshape(-1, waves.shape[-1])
    out = np.stack([soxr.resample(w, rate, MODEL_RATE) for w in flat])
    return out.reshape(*waves.shape[:-1], out.shape[-1])


def kaldi_mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = MODEL_RATE,
                      fmin: float = FMIN, fmax: float = FMAX) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangles equally spaced on Kaldi's mel scale, unnormalised; the Nyquist bin
    gets no weight (as in Kaldi, whose banks cover n_fft / 2 bins)."""
    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    edges = np.linspace(mel(fmin), mel(fmax), n_mels + 2)
    bins = mel(np.arange(n_fft // 2) * rate / n_fft)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up, down = (bins - left) / (centre - left), (right - bins) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up, down))
    return torch.from_numpy(np.pad(banks, ((0, 0), (0, 1))).astype(np.float32))


class LogMel(nn.Module):
    """(B, samples) at MODEL_RATE -> (B, 1, N_MELS, frames): what the mn04 weights were trained on."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=False), persistent=False)
        self.register_buffer("filters", kaldi_mel_filters(), persistent=False)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        x = torch.cat([waves[:, :1], waves[:, 1:] - PREEMPHASIS * waves[:, :-1]], dim=1)
        spec = torch.stft(x, N_FFT, HOP_LENGTH, WIN_LENGTH, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        mel = self.filters @ spec.abs().pow(2)
        return ((torch.log(mel + LOG_OFFSET) + SHIFT) / SCALE).unsqueeze(1)


# --- network -----------------------------------------------------------------------------------------
def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = None):
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=0.001)]
    if act is not None:
        layers.append(nn.ReLU(inplace=True) if act == "relu" else nn.Hardswish(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(channels, squeeze), nn.Linear(squeeze, channels)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * s[:, :, None, None]


class ConcurrentSE(nn.Module):
    """The upstream name of the SE's container (its keys read `...conc_se_layers.0.fc1.weight`)."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.conc_se_layers = nn.ModuleList([SqueezeExcite(channels, squeeze)])

    def forward(self, x):
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    def __init__(self, cin, expanded, cout, kernel, stride, squeeze, act):
        super().__init__()
        layers = [] if expanded == cin else [conv_bn(cin, expanded, 1, act=act)]
        layers.append(conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if squeeze:
            layers.append(ConcurrentSE(expanded, squeeze))
        layers.append(conv_bn(expanded, cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MN04(nn.Module):
    """(B, 1, mels, frames) -> `embed`: the pooled 384-d sound embedding; `forward`: 527 AudioSet logits."""

    name = NAME

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 8, 3, 2, act="hardswish"),
                                      *[InvertedResidual(*b) for b in BLOCKS],
                                      conv_bn(64, EMBED_DIM, 1, act="hardswish"))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(EMBED_DIM, 512),
                                        nn.Hardswish(inplace=True), nn.Dropout(0.2), nn.Linear(512, 527))

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        return self.features(mel).mean(dim=(2, 3))

    def tag_logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """The AudioSet head on an embedding (its pooling and flattening are already done)."""
        return self.classifier[2:](embedding)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.tag_logits(self.embed(mel))


def load_mn04(path: str | Path | None = PRETRAINED_WEIGHTS) -> MN04:
    """mn04 with the AudioSet weights (strict key match); random init when `path` is None."""
    net = MN04()
    if path is not None:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net.eval()
