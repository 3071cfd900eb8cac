"""Taught sounds, measured (BENCHMARKS.md, "Taught sounds").

    python benchmarks/teach_bench.py embed       # every ESC-50 clip through the ear once (cached; minutes)
    python benchmarks/teach_bench.py classes     # leave-classes-out: choose the head on folds 1-3, score fold 4
    python benchmarks/teach_bench.py voice       # a word taught from 5 espeak-ng voices, heard in others; talk
    python benchmarks/teach_bench.py timing      # time to teach, and the live cost per window against none taught

Leave-classes-out protocol: the ear's frozen member (AudioSet's mn04, never tuned to ESC-50) embeds every clip as
the server hears it. For a split, 10 classes are left out: the known head is the project's probe recipe (logistic
regression, L2 1e-2, every window and each sound's first half second) fitted on the 40 other classes of the
training folds; each left-out class is then taught with 5 examples drawn from the training folds (clips that pass
the teaching checks, cut to their sound as `teach` cuts them); the held-out fold's clips of all 50 classes are
scored by the mean of their windows' probabilities. The full model beside it is the same recipe on all 50 classes.
The head's two numbers (TEMPERATURE, CENTER) are chosen on splits whose test fold is 1, 2 or 3 (trained on the
other two of those three), and scored on fold 4 (trained on 1-3) with 10 random class draws.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import audio, taught  # noqa: E402
from offline.datasets import cache_dir, load_dataset, windows  # noqa: E402

CACHE = cache_dir() / "teach_bench_embeddings.npz"


def ear_network():
    from models.model import load_model

    model = load_model()
    return model, taught.frozen_member(model)


def embed(net, wins: np.ndarray, batch: int = 64) -> np.ndarray:
    out = [net.outputs(net.log_mels(wins[s:s + batch]))[2] for s in range(0, len(wins), batch)]
    return np.concatenate(out) if out else np.zeros((0, 384), np.float32)


def embed_all() -> None:
    """Embed each clip as a taught example (folds 1-3, where examples are drawn from), each clip's first window and
    its first half second (as the probe recipe fits them), in batches across clips; each part cached as it is done.
    A clip is scored by its first window (4 s of its 5 s, heard from the onset) to keep this within minutes here."""
    from offline.train_tagger import early_windows

    torch.set_num_threads(2)
    ds = load_dataset(None, progress=False)
    _, net = ear_network()
    parts = {"examples": [], "test": [], "early": []}
    for i, wave in enumerate(ds.waveforms):
        parts["test"].append((i, windows(wave, 0.5)[0]))
        parts["early"] += [(i, w) for w in early_windows([wave], (0.5,))[0]]
        if ds.folds[i] == 4:
            continue
        try:
            parts["examples"] += [(i, w) for w in taught.example_windows(taught.cut_to_sound(wave))]
        except taught.TaughtError:
            pass
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for key, rows in parts.items():
        chunks = []
        for s in range(0, len(rows), 256):
            chunks.append(embed(net, np.stack([w for _, w in rows[s:s + 256]])))
            print(f"{key}: {s + 256}/{len(rows)} windows, {time.time() - t0:.0f} s", flush=True)
        np.savez(CACHE.with_name(f"teach_bench_{key}.npz"), embeddings=np.concatenate(chunks),
                 owner=np.array([i for i, _ in rows]), labels=ds.labels, folds=ds.folds,
                 class_names=np.array(ds.class_names))
    print(f"cached {len(ds.waveforms)} clips in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["embed", "classes", "voice", "timing"])
    a = p.parse_args()
    {"embed": embed_all}[a.what]()
