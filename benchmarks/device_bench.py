"""The live parts on an accelerator against the same machine's CPU, in one run (the ear runs on
cuda/mps/cpu; a GPU host should just go faster).

1. the ear: the shipped classifier hears the same windows of the demo recordings on the CPU and on the device:
   ms per window (median), the largest difference between the two devices' probabilities and AudioSet tags, and
   how often their top classes agree (the same network must hear the same thing anywhere);
2. the dream: keyframes per second of DreamEngine with the dream backbone that ships, on the CPU at the CPU's
   profile size and on the device at its own (224 and 720 px for a CPU and CUDA) and at the CPU's; and whether
   each picture moves and is not flat;
3. the server as the app meets it: `hear-and-see serve --device D` under a venue that dreams every window, one client
   sending a window every 0.5 s and granting frame credit as the app does, for --seconds: live keyframes per
   second received and the round trip window -> result (the user sees these, not the engine's best case);
4. fine-tuning: seconds per step of `offline.train_tagger.fine_tune` (batch of 32 crops, distillation included) on
   synthetic clips;
5. many kiosks on one server (benchmarks/batch_bench.py on the device): live keyframes per second in total and the
   round trip window -> result for 1, 2, 4 and 8 kiosks, their dream steps batched against one at a time, and
   the server's time per dream step (what decides the device's default batch, server.BATCH).

Usage: python benchmarks/device_bench.py [--device cuda] [--seconds 30] [--batch-seconds 10]
       [--out runs/device_bench.json]
With --device cpu every part runs on the CPU twice (a smoke run of this script).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from models import audio, efficientat  # noqa: E402
from models.backbones import DREAM_BACKBONE, create_backbone, default_device  # noqa: E402
from models.dream import DreamEngine, profile_size  # noqa: E402
from models.model import hear, load_model  # noqa: E402
from models.seeds import imagenet_classes, load_seed_image, seed_image_path  # noqa: E402

DEMO = ROOT / "app" / "demo_audio"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def demo_windows(hop_s: float = 0.5) -> np.ndarray:
    """Every 4 s window, `hop_s` apart, of every demo recording (padded with silence before and after)."""
    out = []
    for path in sorted(DEMO.glob("*.mp3")):
        wave = np.concatenate([np.zeros(audio.N_SAMPLES // 2, np.float32), audio.load_audio(path),
                               np.zeros(audio.N_SAMPLES // 2, np.float32)])
        hop = int(hop_s * audio.SAMPLE_RATE)
        out += [wave[s:s + audio.N_SAMPLES] for s in range(0, len(wave) - audio.N_SAMPLES + 1, hop)]
    return np.stack(out)


def ear(device: torch.device) -> dict:
    windows = demo_windows()
    heard, ms = [], []
    for where in (torch.device("cpu"), device):
        model = load_model(device=where)
        hear(model, windows[:2])  # warm up: kernels, caches
        probs, tags, times = [], [], []
        for w in windows:
            sync(where)
            t = time.perf_counter()
            p, g = hear(model, w[None])
            sync(where)
            times.append((time.perf_counter() - t) * 1000)
            probs.append(p[0])
            tags.append(g[0])
        heard.append((np.stack(probs), np.stack(tags)))
        ms.append(round(float(np.median(times)), 1))
    (cpu_p, cpu_t), (dev_p, dev_t) = heard
    return dict(windows=len(windows), ms_per_window_cpu=ms[0], ms_per_window_device=ms[1],
                max_prob_difference=float(np.abs(cpu_p - dev_p).max()),
                max_tag_difference=float(np.abs(cpu_t - dev_t).max()),
                same_top_class=float((cpu_p.argmax(1) == dev_p.argmax(1)).mean()))


def dream(device: torch.device, keyframes: int) -> list[dict]:
    label = "dog"
    seed = load_seed_image(seed_image_path(label, ROOT / "seed_images"))
    backbone = create_backbone(DREAM_BACKBONE)
    rows = []
    cpu = torch.device("cpu")
    for where, size in ((cpu, profile_size(cpu)), (device, profile_size(device)), (device, profile_size(cpu))):
        engine = DreamEngine(backbone, size=size, device=where)
        engine.set_seed(label, seed, imagenet_classes(label))
        first = engine.next_keyframe()
        sync(where)
        t = time.perf_counter()
        for _ in range(keyframes):
            last = engine.next_keyframe()
        sync(where)
        rate = keyframes / (time.perf_counter() - t)
        grey = last.mean(axis=2)
        rows.append(dict(device=str(where), size=list(last.shape[:2]), keyframes_per_s=round(rate, 2),
                         luminance_std=round(float(grey.std()), 1),
                         moved=round(float(np.abs(last.astype(float) - first.astype(float)).mean()), 1)))
    return rows


def server(device: torch.device, seconds: float) -> dict:
    import robustness_bench as rb

    with rb.server_that_always_dreams("--device", str(device)) as (address, _):
        stats: dict = {}
        rb.run_client(address, seconds, stats, "device", 440.0)
    s = stats["device"]
    return dict(device=str(device), seconds=seconds, keyframes_per_s=round(s["frames"] / seconds, 2),
                results=s["results"], round_trip_p50_ms=s["p50_ms"], round_trip_p95_ms=s["p95_ms"])


def training(device: torch.device, steps: int) -> dict:
    from offline import train_tagger
    from offline.datasets import ClipSet
    from models.model import build_model

    rng = np.random.default_rng(0)
    recipe = train_tagger.TaggerRecipe(epochs=1)
    n = recipe.batch_size * steps
    clips = ClipSet("synthetic", ["a", "b"], [f"{i}.wav" for i in range(n)], np.arange(n) % 2, np.ones(n, int),
                    [str(i) for i in range(n)], [rng.normal(0, 0.1, 5 * audio.SAMPLE_RATE).astype(np.float32)
                                                 for _ in range(n)])
    out = {}
    for where in (torch.device("cpu"), device):
        model = build_model(efficientat.NAME, clips.class_names)
        t = time.perf_counter()
        history = train_tagger.fine_tune(model, clips, None, recipe, device=str(where))
        out[str(where)] = dict(seconds_per_step=round((time.perf_counter() - t) / steps, 3),
                               loss=round(history[-1]["loss"], 3))
    return out


def batching(device: torch.device, seconds: float) -> dict:
    import batch_bench

    summary = batch_bench.bench(device, [1, 2, 4, 8], seconds, rounds=1)
    return dict(runs=summary["runs"], ratios=summary["ratios"], default_batch=summary["default_batch"],
                dream_size=summary["dream_size"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default=str(default_device()))
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--keyframes", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-seconds", type=float, default=10.0, help="per setting of the batching part")
    p.add_argument("--parts", default="ear,dream,server,training,batching")
    p.add_argument("--out", default="runs/device_bench.json")
    args = p.parse_args()
    device = torch.device(args.device)
    summary = dict(date=time.strftime("%Y-%m-%d %H:%M"), machine=f"{platform.machine()}, {os.cpu_count()} cores",
                   torch=torch.__version__, device=str(device),
                   accelerator=torch.cuda.get_device_name() if device.type == "cuda" else None,
                   torch_threads=torch.get_num_threads())
    print(json.dumps(summary), flush=True)
    parts = {"ear": lambda: ear(device), "dream": lambda: dream(device, args.keyframes),
             "server": lambda: server(device, args.seconds), "training": lambda: training(device, args.steps),
             "batching": lambda: batching(device, args.batch_seconds)}
    for name in args.parts.split(","):
        t = time.perf_counter()
        try:
            summary[name] = parts[name]()
        except Exception as exc:  # one part's failure is a finding; the others still run
            summary[name] = dict(error=f"{type(exc).__name__}: {exc}")
        print(name, f"({time.perf_counter() - t:.0f} s)", json.dumps(summary[name]), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
