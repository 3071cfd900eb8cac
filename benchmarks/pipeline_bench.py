"""End-to-end numbers for the whole loop, on this machine, in one run:

1. launch to first image and to first live dream frame: `hear-and-see run --headless` on the demo recordings,
   a fresh process each time (so torch import and model loading count);
2. classification ms per 4 s window, in-process, median of many windows, beside the wire round trip
   (window sent -> result back, through a real server on loopback) to show what the protocol adds; when the
   shipped model is an ensemble, one of its members alone is timed in turn with it, as the baseline.

Usage: python benchmarks/pipeline_bench.py [--runs 2] [--baseline OTHER_CHECKOUT]

With --baseline, launches alternate between this checkout and the other one (an older commit, say), so both
meet the same load; the ratios are what to compare.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def launch_to_first_image(root: Path = ROOT) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "app.cli", "run", "--input", str(root / "app" / "demo_audio"),
                        "--headless", "--duration", "45", "--output", tmp], cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.loads((Path(tmp) / "timeline.json").read_text())


def classification_ms(n: int = 60) -> tuple[float, float | None, float]:
    """(ms per window for the shipped model, for one ensemble member alone or None, round trip ms)."""
    import torch
    from app.client import InferenceClient
    from inference_server.server import InferenceServer
    from models.backbones import create_backbone
    from models.model import SHIPPED_CHECKPOINT, Ensemble, load_model, build_model
    from models.classes import ESC50_CLASSES

    torch.set_num_threads(2)
    model = load_model() if SHIPPED_CHECKPOINT.is_file() else build_model("efficientnet_lite0", ESC50_CLASSES)
    member = model.members[0] if isinstance(model, Ensemble) else None
    windows = np.random.default_rng(0).normal(0, 0.1, (n, 64000)).astype(np.float32)
    model.predict(windows[:1])
    times, member_times = [], []
    for w in windows:  # in turns, so that load from other jobs falls on both alike
        for m, out in ((model, times), (member, member_times)):
            if m is not None:
                t = time.perf_counter()
                m.predict(w[None])
                out.append((time.perf_counter() - t) * 1000)
    in_process = float(np.median(times))
    one_member = float(np.median(member_times)) if member_times else None

    address = "tcp://127.0.0.1:5599"
    server = InferenceServer(model, create_backbone("efficientnet_lite0", pretrained=False), ROOT / "seed_images",
                             address)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop.is_set,), daemon=True)
    thread.start()
    client = InferenceClient(address, "bench")
    while not client.alive:
        client.poll(50)
    trips = []
    for w in windows:
        t = time.perf_counter()
        client.send_window(w, 16000)
        results: list = []
        while not results:
            results, _ = client.poll(100)
        trips.append((time.perf_counter() - t) * 1000)
    client.close()
    stop.set()
    thread.join()
    return in_process, one_member, float(np.median(trips))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another checkout whose launches alternate with these")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    in_process, one_member, round_trip = classification_ms()
    print(f"classification per 4 s window: {in_process:.1f} ms in process, {round_trip:.1f} ms round trip over "
          f"loopback ZeroMQ (ratio {round_trip / in_process:.2f})")
    if one_member is not None:
        print(f"one ensemble member alone: {one_member:.1f} ms (the ensemble costs {in_process / one_member:.2f}x)")
    roots = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    seen: dict[str, list[dict]] = {name: [] for name, _ in roots}
    for i in range(args.runs):
        for name, root in roots:
            t = launch_to_first_image(root)
            seen[name].append(t)
            print(f"{name} run {i}: first image {t['first_image_s']:.1f} s, first live dream frame "
                  f"{t['first_live_frame_s'] if t['first_live_frame_s'] is None else round(t['first_live_frame_s'], 1)} s, "
                  f"frames drawn {t['frames_drawn']} {t['frames_by_source']}")
    if args.baseline:
        for key in ("first_image_s", "first_live_frame_s"):
            medians = {name: float(np.median([t[key] for t in runs if t[key] is not None] or [np.nan]))
                       for name, runs in seen.items()}
            print(f"{key}: median {medians['this']:.2f} s here, {medians['baseline']:.2f} s in the baseline "
                  f"(ratio {medians['this'] / medians['baseline']:.2f})")


if __name__ == "__main__":
    main()
