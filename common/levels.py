"""Loudness of 10 ms frames, read one way wherever a sound's onset is looked for: the ear's cut
(models/audio.from_onset) and the app's detector (app/capture.sound_began)."""
from __future__ import annotations

import numpy as np


def frame_db(samples: np.ndarray, frame: int) -> np.ndarray:
    """(n,) -> (n // frame,): the power in dB of each whole `frame` samples from the start."""
    n = len(samples) // frame
    power = np.mean(np.square(samples[:n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    return 10.0 * np.log10(power + 1e-20)
