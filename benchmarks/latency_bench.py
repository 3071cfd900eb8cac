"""Sound onset to label on screen, in the running app (the goal: median 0.6 s or less).

The bundled CC0 recordings are laid one after another into one file, each after 6 s of silence, and played to
`hear-and-see run --headless` in real time as a microphone would hear them. An event's onset is the first 10 ms
of its recording louder than -40 dBFS; its latency is the time from there to the first label the app shows
(timeline.json) naming the right class, and to the first label of any kind. The app logs when its input began
to play ("playing ... from"), so both sides are on the app's own clock.

Usage: python benchmarks/latency_bench.py [--runs 2] [--baseline OTHER_CHECKOUT] [--mode default] [--window] [--taught]
With --baseline, runs alternate between this checkout and the other one (same machine load for both).
With --taught, the venue has the taught words of benchmarks/teach_bench.py (imitations of the animals taught from
five espeak-ng voices), and runs alternate between those words said by a voice they were not taught with and the
bundled recordings, in the same app: the taught sounds' latency beside the built-in classes'.
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


def event_file(folder: Path, clips: list[tuple[str, np.ndarray]], name: str = "events") -> tuple[Path, list]:
    """The clips one after another, each after GAP_S of silence: the file, and each clip's (label, onset)."""
    parts, onsets, t = [], [], 0.0
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    for label, clip in clips:
        parts += [gap, clip]
        onsets.append((label, t + GAP_S + onset(clip)))
        t += GAP_S + len(clip) / SAMPLE_RATE
    parts.append(gap)
    path = folder / f"{name}.wav"
    sf.write(path, np.concatenate(parts), SAMPLE_RATE)
    return path, onsets


def bundled_recordings() -> list[tuple[str, np.ndarray]]:
    return [(name, load_audio(ROOT / "app" / "demo_audio" / f"{name}.mp3")) for name in EVENTS]


def taught_words(folder: Path, venue: str | None = None) -> tuple[list[tuple[str, np.ndarray]], Path]:
    """Teach teach_bench's words (and its whistle) into a venue folder; the words said by an unseen voice. Returns
    the said words with the label each should show, and the venue file that knows them (and says what `venue`,
    another venue file, says)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import teach_bench

    teach_bench.teach_ten(folder / "taught", folder)
    voice, speed = teach_bench.TEST_VOICES[0]
    said = [(as_ or name, load_audio(teach_bench.espeak(text, voice, speed, folder / f"said_{name}.wav")))
            for name, (text, as_) in teach_bench.WORDS.items()]
    config = folder / "venue.toml"
    config.write_text(f'taught_dir = "{folder / "taught"}"\n' + (Path(venue).read_text() if venue else ""))
    return said, config


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
    p.add_argument("--taught", action="store_true", help="taught words against the bundled recordings, one venue")
    p.add_argument("--out", default="runs/latency_bench.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        display_env = None
        if args.window:
            from tests.conftest import XServer  # the tests' Xvfb

            x = XServer((1280, 720))
            stack.callback(x.close)
            display_env = x.env()
        # what runs in turn: (name, checkout, events file, onsets, venue file)
        recordings = event_file(Path(tmp), bundled_recordings())
        if args.taught:
            said, config = taught_words(Path(tmp), args.config)
            arms = [("taught", ROOT, *event_file(Path(tmp), said, "said"), str(config)),
                    ("built-in", ROOT, *recordings, str(config))]
        else:
            arms = [("this", ROOT, *recordings, args.config)]
            if args.baseline:
                arms.append(("baseline", Path(args.baseline).resolve(), *recordings, None))
        results = {arm[0]: [] for arm in arms}
        onsets_of = {arm[0]: arm[3] for arm in arms}
        for run in range(args.runs):
            for name, root, wav, onsets, config in arms:
                r = one_run(root, wav, onsets, args.mode, config, display_env)
                results[name].append(r)
                right = [row["right_label_s"] for row in r["rows"]]
                print(f"run {run + 1} {name}: right label after " + ", ".join(
                    f"{row['event']} {'-' if v is None else f'{v:.2f}'}" for row, v in zip(r["rows"], right)),
                    flush=True)
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, "
               f"{__import__('os').cpu_count()} cores", "mode": args.mode, "config": args.config,
               "display": "window (Xvfb)" if args.window else "headless",
               "onsets": onsets_of, "load_average": open("/proc/loadavg").read().split()[:3]}
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
