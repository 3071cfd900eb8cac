"""How soon after a sound begins does the ear name it? Held-out ESC-50 clips, each after 6 s of a bed (digital
silence, or pink noise at -50 dBFS: a quiet room), heard in 4 s windows ending 0.25, 0.5, ... 2 s after the
clip's onset. An event's time is the first such window whose top class is right at p >= the gate's
min_confidence. The same checkpoint is scored hearing each window from its sound's onset (`audio.from_onset`,
what ships) and hearing it whole (the cut replaced by the identity), in one run.

This is the ear alone; `latency_bench.py` measures the running app (hop, server, gate and screen included).

Usage: python benchmarks/onset_bench.py --checkpoint runs/ens3_fold4.pt --folds 4 [--per-class 4]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import audio  # noqa: E402
from models.gate import GateSettings  # noqa: E402
from models.model import load_model  # noqa: E402
from offline.datasets import load_dataset  # noqa: E402
from offline.evaluate import noise  # noqa: E402

LEAD_S = 6.0
AFTER_ONSET_S = np.arange(0.25, 2.01, 0.25)
ONSET_DBFS = -40.0


def onset(clip: np.ndarray) -> int:
    """The first 10 ms louder than -40 dBFS (or than 20 dB below the clip's loudest, for quiet clips)."""
    frame = audio.SAMPLE_RATE // 100
    n = len(clip) // frame
    db = 10 * np.log10(np.mean(clip[:n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    return int(np.argmax(db > min(ONSET_DBFS, db.max() - 20))) * frame


def first_right(model, stream: np.ndarray, at: int, label: int, min_confidence: float) -> float | None:
    ends = [at + int(d * audio.SAMPLE_RATE) for d in AFTER_ONSET_S]
    probs = model.predict(np.stack([stream[e - audio.N_SAMPLES:e] for e in ends]))
    right = [d for d, p in zip(AFTER_ONSET_S, probs) if p.argmax() == label and p.max() >= min_confidence]
    return float(right[0]) if right else None


def summary(times: list[float | None]) -> dict:
    t = np.array([np.inf if x is None else x for x in times])
    return dict(median_s=float(np.median(t)), **{f"named_by_{d:g}_s": float((t <= d).mean()) for d in (0.5, 1.0, 2.0)})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True, help="a checkpoint that held out --folds")
    p.add_argument("--folds", nargs="+", type=int, default=[4])
    p.add_argument("--per-class", type=int, default=4, help="clips per class, drawn at random")
    p.add_argument("--out", default="runs/onset_bench.json")
    args = p.parse_args()
    model = load_model(args.checkpoint)
    ds = load_dataset(None, folds=args.folds, progress=False)
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.flatnonzero(ds.labels == c), args.per_class, replace=False)
                           for c in range(len(ds.class_names))])
    min_confidence = GateSettings().min_confidence
    from_onset = audio.from_onset
    results = {}
    for bed in ("silence", "pink"):
        times = {"from onset": [], "whole window": []}
        for i in pick:
            clip, lead = ds.waveforms[i], int(LEAD_S * audio.SAMPLE_RATE)
            stream = noise(bed, lead + len(clip) + int(AFTER_ONSET_S[-1] * audio.SAMPLE_RATE), -50.0, rng)
            stream[lead:lead + len(clip)] += clip
            for name, cut in (("from onset", from_onset), ("whole window", lambda w: w)):
                audio.from_onset = cut
                times[name].append(first_right(model, stream, lead + onset(clip), int(ds.labels[i]), min_confidence))
        audio.from_onset = from_onset
        results[bed] = {name: summary(t) for name, t in times.items()}
        print(bed, json.dumps(results[bed]), flush=True)
    out = dict(date=time.strftime("%Y-%m-%d %H:%M"), machine=f"{platform.machine()}, {__import__('os').cpu_count()} cores",
               checkpoint=args.checkpoint, folds=args.folds, clips=len(pick), beds=results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
