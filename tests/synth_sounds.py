"""Tiny synthetic datasets in the ESC-50, UrbanSound8K and folder layouts: class "tone" (a sine) against class
"hiss" (white noise), easy enough that any model worth its salt separates them in seconds."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000
CLASSES = ["tone", "hiss"]


def clip(label: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if label == 0:
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(300, 900) * t) + 0.003 * rng.standard_normal(len(t))
    else:
        x = 0.1 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def make_esc50(root: Path, folds=(1, 2, 3, 4), per_class_per_fold: int = 2, seconds: float = 5.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    n = 0
    for fold in folds:
        for label, name in enumerate(CLASSES):
            for k in range(per_class_per_fold):
                n += 1
                fn = f"{fold}-{1000 + n}-A-{label}.flac"
                sf.write(root / "audio" / fn, clip(label, seconds, rng), SR)
                rows.append(dict(filename=fn, fold=fold, target=label, category=name, esc10=False,
                                 src_file=1000 + n, take="A"))
    with open(root / "esc50.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def make_urbansound8k(root: Path, folds=(1, 2), per_class_per_fold: int = 2, seed: int = 1):
    rng = np.random.default_rng(seed)
    rows = []
    n = 0
    for fold in folds:
        (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
        for label, name in enumerate(CLASSES):
            for k in range(per_class_per_fold):
                n += 1
                fn = f"{2000 + n}-{label}-0-{k}.wav"
                sf.write(root / "audio" / f"fold{fold}" / fn, clip(label, 2.5, rng), SR)  # US8K slices are <= 4 s
                rows.append(dict(slice_file_name=fn, fsID=2000 + n, start=0.0, end=2.5, salience=1, fold=fold,
                                 classID=label, **{"class": name}))
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def make_folder(root: Path, recordings_per_class: int = 5, clips_per_recording: int = 3, seed: int = 2):
    """<root>/<class>/<recording>_<k>.wav: clips cut from `recordings_per_class` source recordings."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for r in range(recordings_per_class):
            for k in range(clips_per_recording):
                sf.write(root / name / f"{name}-rec{r}_{k:03d}.wav", clip(label, 4.5, rng), SR)
    return root
