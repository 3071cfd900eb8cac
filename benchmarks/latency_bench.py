"""Sound onset to label on screen, in the running app (the goal: median 0.6 s or less).

The bundled CC0 recordings are laid one after another into one file, each after 6 s of silence, and played to
`hear-and-see run --headless` in real time as a microphone would hear them. An event's onset is the first 10 ms
of its recording louder than -40 dBFS; its latency is the time from there to the first label the app shows
(timeline.json) naming the right class, and to the first label of any kind. The app logs when its input began
to play ("playing ... from"), so both sides are on the app's own clock.

Usage: python benchmarks/latency_bench.py [--runs 2] [--baseline OTHER_CHECKOUT] [--mode default] [--window]
With --baseline, runs alternate between this checkout and the other one (same machine load for both).
With --window, the app shows a 1280x720 window on an Xvfb display (paced by its swap, ~60 fps) instead of
rendering headless at 30 fps; either way it saves its timeline and a frame twice a second (--output).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.sound import SAMPLE_RATE, load_audio  # noqa: E402

GAP_S = 6.0
ONSET_DBFS = -40.0
EVENTS = ["cat", "cow", "dog", "frog", "pig", "rooster", "sheep"]  # the demo's, named as ESC-50 names them


def onset(samples: np.ndarray) -> float:
    frame = SAMPLE_RATE // 100
    n = len(samples) // frame
    rms = np.sqrt(np.mean(samples[:n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    loud = np.flatnonzero(20 * np.log10(rms) > ONSET_DBFS)
    return float(loud[0] * frame / SAMPLE_RATE) if len(loud) else 0.0


def event_file(folder: Path) -> tuple[Path, list[tuple[str, float]]]:
    parts, onsets, t = [], [], 0.0
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    for name in EVENTS:
        clip = load_audio(ROOT / "app" / "demo_audio" / f"{name}.mp3")
        parts += [gap, clip]
        onsets.append((name, t + GAP_S + onset(clip)))
        t += GAP_S + len(clip) / SAMPLE_RATE
    parts.append(gap)
    path = folder / "events.wav"
    sf.write(path, np.concatenate(parts), SAMPLE_RATE)
    return path, onsets


def one_run(root: Path, wav: Path, onsets, mode: str, config: str | None = None, display_env: dict | None = None) -> dict:
    duration = onsets[-1][1] + GAP_S + 4.0
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, "-m", "app.cli", "run", "--input", str(wav),
                               *([] if display_env else ["--headless"]),
                               "--mode", mode, "--duration", str(duration + 20), "--output", out,
                               *(["--config", config] if config else [])],
                              cwd=root, capture_output=True, text=True, timeout=duration + 200, env=display_env)
        timeline = json.loads((Path(out) / "timeline.json").read_text())
    found = re.search(r"server ready after ([0-9.]+) s: playing", proc.stderr)
    if not found:
        raise RuntimeError(f"no 'server ready' line in the app's log:\n{proc.stderr[-2000:]}")
    start = float(found.group(1))
    labels = [(t, label) for t, label, _ in timeline["labels"]]
    rows = []
    for i, (name, at) in enumerate(onsets):
        t0 = start + at
        until = start + (onsets[i + 1][1] if i + 1 < len(onsets) else at + GAP_S + 4)
        shown = [(t, label) for t, label in labels if t0 - 0.05 <= t < until and label is not None]
        right = next((t - t0 for t, label in shown if label == name), None)
        anything = shown[0][0] - t0 if shown else None
        rows.append(dict(event=name, right_label_s=right, any_label_s=anything,
                         first_label=shown[0][1] if shown else None))
    return dict(rows=rows, start_s=start)


def median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--baseline", help="another checkout of the project, run in turn with this one")
    p.add_argument("--mode", default="default")
    p.add_argument("--config", help="a venue file for this checkout's runs (e.g. another hop_seconds)")
    p.add_argument("--window", action="store_true", help="a window on an Xvfb display instead of headless")
    p.add_argument("--out", default="runs/latency_bench.json")
    args = p.parse_args()
    roots = {"this": ROOT, **({"baseline": Path(args.baseline).resolve()} if args.baseline else {})}
    results = {name: [] for name in roots}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        display_env = None
        if args.window:
            from tests.conftest import XServer  # the tests' Xvfb

            x = XServer((1280, 720))
            stack.callback(x.close)
            display_env = x.env()
        wav, onsets = event_file(Path(tmp))
        for run in range(args.runs):
            for name, root in roots.items():
                r = one_run(root, wav, onsets, args.mode, args.config if name == "this" else None, display_env)
                results[name].append(r)
                right = [row["right_label_s"] for row in r["rows"]]
                print(f"run {run + 1} {name}: right label after " + ", ".join(
                    f"{row['event']} {'-' if v is None else f'{v:.2f}'}" for row, v in zip(r["rows"], right)),
                    flush=True)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, "
               f"{__import__('os').cpu_count()} cores", "mode": args.mode, "config": args.config,
               "display": "window (Xvfb)" if args.window else "headless",
               "onsets": onsets}
    for name, runs in results.items():
        rows = [row for r in runs for row in r["rows"]]
        summary[name] = dict(
            median_right_label_s=median([r["right_label_s"] for r in rows]),
            median_any_label_s=median([r["any_label_s"] for r in rows]),
            named_right=f"{sum(r['right_label_s'] is not None for r in rows)}/{len(rows)}", runs=runs)
        print(f"{name}: median onset -> right label {summary[name]['median_right_label_s']}, -> any label "
              f"{summary[name]['median_any_label_s']}, events named right {summary[name]['named_right']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
