"""When does the app send the window that names a sound? The ear and the gate under each send schedule, over
every phase of the hop's grid against the sound.

Each event (the demo's 7 recordings that latency_bench.py plays, or held-out ESC-50 clips) is laid after 6 s of
silence; every 4 s window ending 10 ms apart around its onset is heard once by the classifier. A schedule is the
app's own `app.run.WindowClock`, run at 10 ms turns from every start phase within a hop, told of the onset when
the app's own detector (`app.capture.sound_began`, on 50 ms blocks) finds it; its windows go through a fresh gate.
An event's latency is onset (first 10 ms above -40 dBFS) to the first window whose gated label is right; "wrong
first" counts events whose first label was another class. Server and screen time are not in it (tens of ms
to a tenth of a second): latency_bench.py measures the running app.

Usage: python benchmarks/schedule_bench.py [--checkpoint runs/ens_fold4.pt --folds 4 --per-class 1]
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

from app.capture import FILE_BLOCK_SECONDS, SAMPLE_RATE, RingBuffer, sound_began  # noqa: E402
from app.run import LOOKS_AFTER_ONSET, WindowClock  # noqa: E402
from benchmarks.latency_bench import EVENTS, onset  # noqa: E402
from models import audio  # noqa: E402
from models.gate import GateSettings  # noqa: E402
from models.model import hear, load_model  # noqa: E402
from offline.evaluate import gated  # noqa: E402

LEAD_S, TURN_S = 6.0, 0.01
HEARD_S = (-0.6, 3.0)  # windows ending this long before / after the onset are heard


class Event:
    def __init__(self, name: str, truth: str, clip: np.ndarray, model):
        stream = np.concatenate([np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32), clip,
                                 np.zeros(4 * SAMPLE_RATE, np.float32)])
        self.name, self.truth, self.onset = name, truth, LEAD_S + onset(clip)
        self.ends = np.round(np.arange(self.onset + HEARD_S[0], self.onset + HEARD_S[1], TURN_S), 2)
        wins = np.stack([stream[int(e * SAMPLE_RATE) - audio.N_SAMPLES:int(e * SAMPLE_RATE)] for e in self.ends])
        self.probs, self.tags = hear(model, wins)
        self.dbfs = [audio.rms_dbfs(w) for w in wins]
        ring, block = RingBuffer(), int(FILE_BLOCK_SECONDS * SAMPLE_RATE)
        self.detected = None
        for s in range(0, len(stream), block):
            ring.write(stream[s:s + block])
            if sound_began(ring.latest()):
                self.detected = (s + block) / SAMPLE_RATE
                break

    def latency(self, model, gate: GateSettings, hop: float, looks: tuple[float, ...], phase: float):
        """(onset -> right label, or None; whether another label came first; windows sent in 2 s from the onset)."""
        clock = WindowClock(hop, self.ends[0] - hop + phase, looks)
        sent = []
        for i, now in enumerate(self.ends):
            if self.detected is not None and abs(now - self.detected) < TURN_S / 2:
                clock.sound_began(now)
            if clock.due(now):
                sent.append(i)
        shown = gated(model, gate, self.probs[sent], None if self.tags is None else self.tags[sent],
                      [self.dbfs[i] for i in sent], self.ends[sent])
        after = [(label, t - self.onset) for label, t in zip(shown, self.ends[sent])
                 if label is not None and t >= self.onset]
        right = next((t for label, t in after if label == self.truth), None)
        wrong_first = bool(after) and after[0][0] != self.truth
        return right, wrong_first, sum(0 <= t - self.onset < 2.0 for t in self.ends[sent])


def events(model, folds, per_class: int) -> list[Event]:
    if not folds:
        return [Event(name, name, audio.load_audio(ROOT / "app" / "demo_audio" / f"{name}.mp3"), model)
                for name in EVENTS]
    from offline.datasets import load_dataset
    ds = load_dataset(None, progress=False)
    held_out = np.isin(ds.folds, folds)
    picked = [i for c in range(len(ds.class_names)) for i in np.flatnonzero((ds.labels == c) & held_out)[:per_class]]
    return [Event(f"clip{i}", ds.class_names[ds.labels[i]], ds.waveforms[i], model) for i in picked]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", help="default: the shipped classifier")
    p.add_argument("--folds", type=int, nargs="*", default=[],
                   help="ESC-50 folds to draw clips from (default: the demo)")
    p.add_argument("--per-class", type=int, default=1)
    p.add_argument("--out", default="runs/schedule_bench.json")
    args = p.parse_args()
    model = load_model(args.checkpoint)
    started = time.time()
    evs = events(model, args.folds, args.per_class)
    schedules = {
        "hop 0.5 s (before)": (0.5, (), GateSettings()),
        "hop 0.25 s": (0.25, (), GateSettings()),
        "hop 0.5 s + looks (what ships)": (0.5, LOOKS_AFTER_ONSET, GateSettings()),
        "hop 0.5 s + looks, 2 windows to enter": (0.5, LOOKS_AFTER_ONSET, GateSettings(enter_windows=2)),
    }
    summary = dict(date=time.strftime("%Y-%m-%d"), machine=platform.machine(), checkpoint=args.checkpoint or "shipped",
                   events=len(evs), folds=args.folds, rows={})
    for name, (hop, looks, gate) in schedules.items():
        runs = [e.latency(model, gate, hop, looks, phase) for e in evs for phase in np.arange(0.0, hop, TURN_S)]
        times = np.array([np.inf if t is None else t for t, _, _ in runs])
        row = dict(median_s=float(np.median(times)), named_by_0_6_s=float(np.mean(times <= 0.6)),
                   named_by_1_s=float(np.mean(times <= 1.0)), never=float(np.mean(np.isinf(times))),
                   wrong_first=float(np.mean([w for _, w, _ in runs])),
                   windows_in_2_s=float(np.mean([n for _, _, n in runs])))
        if not args.folds:
            per_event = times.reshape(len(evs), -1)  # runs go event by event, every phase of one event together
            row["per_event_median_s"] = {e.name: float(np.median(t)) for e, t in zip(evs, per_event)}
        summary["rows"][name] = row
        print(f"{name:40s} median {row['median_s']:.2f} s, named by 0.6 s {row['named_by_0_6_s']:.0%}, by 1 s "
              f"{row['named_by_1_s']:.0%}, wrong first {row['wrong_first']:.0%}, "
              f"windows in 2 s {row['windows_in_2_s']:.1f}", flush=True)
    summary["seconds"] = round(time.time() - started)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
