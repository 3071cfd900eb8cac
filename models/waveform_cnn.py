"""A comparison row, not a product: an end-to-end 1-D CNN on the raw 16 kHz waveform, trained from scratch.

The question it answers: does a network that learns its own filterbank from the samples (the barks-and-meows
article; Abdoli et al. 2019, arXiv:1904.08990, 89 % on UrbanSound8K) beat an ImageNet CNN looking at log-mel
"images" on ESC-50's folds here? It trains through the same loop as the spectrogram models
(`hear-and-see train --backbone waveform_cnn --recipe waveform`) and is scored the same way, but it cannot be
served: the app needs a backbone it can also dream with.

Layout: a wide strided first layer (a learned filterbank, 4 ms long), three more conv blocks that pool the time
axis down by 512 in all, then global average and max pooling so any length works. ~0.3 M parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from models.model import SoundClassifier

NAME = "waveform_cnn"


def _block(c_in: int, c_out: int, kernel: int, stride: int, pool: int) -> nn.Sequential:
    layers = [nn.Conv1d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
              nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
    if pool > 1:
        layers.append(nn.MaxPool1d(pool))
    return nn.Sequential(*layers)


class WaveformCNN(nn.Module):
    def __init__(self, class_names: list[str], dropout: float = 0.3):
        super().__init__()
        self.class_names = list(class_names)
        self.features = nn.Sequential(
            _block(1, 32, 64, 2, 8),     # 16 kHz -> 1 kHz frames
            _block(32, 64, 32, 2, 8),    # -> 62.5 Hz
            _block(64, 128, 16, 2, 2),   # -> 15.6 Hz
            _block(128, 256, 8, 2, 1),   # -> 7.8 Hz, about 128 ms per step
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * 256, len(class_names))
        self.trained = False

    @staticmethod
    def inputs(waves: torch.Tensor) -> torch.Tensor:
        """(B, N_SAMPLES) waveforms -> the network's input: each window scaled to unit RMS, so that, like
        the log-mel models' gain augmentation, loudness says little and the shape of the sound says much."""
        rms = waves.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-4)
        return (waves / rms).unsqueeze(1)

    predict = SoundClassifier.predict  # scored as every classifier is: windows in, probabilities out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = torch.cat([h.mean(-1), h.amax(-1)], dim=1)
        return self.head(self.dropout(h))
