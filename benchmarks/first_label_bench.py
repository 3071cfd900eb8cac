"""The first picture a sound brings: how often it is another class's, and how soon the right one comes, under each
of the gate's entry rules. Chosen on folds 1-3, scored on fold 4, by an ear that never heard the clips it is scored
on (the shipped pair heard every fold, so it cannot be scored on any).

The ear: the frozen AudioSet mn04 with a probe fitted as `offline.train_tagger.probe` fits it (every window of its
training clips, and each sound's first half second), on the other two of folds 1-3 for a fold of 1-3 and on
folds 1-3 for fold 4. Events are laid after 6 s of silence, as `schedule_bench.py` lays them; the app's own send
schedule (`app.run.WindowClock`, told of the onset by `app.capture.sound_began`) runs from `--phases` start phases
within a hop, and only the windows it sends are heard. Latency: onset to the first window whose gated label is
right; "wrong first": the first label shown was another class.

With `--mode toy` the events are that mode's classes only (the toy's ten animals), heard as the server hears a
class set (the probabilities restricted to it), through the mode's own gate and rules around it: the wrong animal a
child sees first.

Usage: python benchmarks/first_label_bench.py [--per-class 2] [--phases 5] [--mode toy]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.capture import FILE_BLOCK_SECONDS, SAMPLE_RATE, RingBuffer, sound_began  # noqa: E402
from app.config import MODE_DEFAULTS  # noqa: E402
from app.run import LOOKS_AFTER_ONSET, WindowClock  # noqa: E402
from benchmarks.latency_bench import onset  # noqa: E402
from models import audio, efficientat  # noqa: E402
from models.classes import CLASS_SETS, restrict  # noqa: E402
from models.gate import GateSettings  # noqa: E402
from models.model import build_model  # noqa: E402
from offline.datasets import cache_dir, load_dataset  # noqa: E402
from offline.evaluate import gated  # noqa: E402
from offline.train import clip_embeddings, fit_head  # noqa: E402
from offline.train_tagger import TaggerRecipe, early_windows, heard_embeddings  # noqa: E402

LEAD_S, TURN_S, HOP_S = 6.0, 0.01, 0.5
HEARD_S = (-0.3, 1.6)   # the schedule's windows ending this long before / after the onset are heard
SELECT_FOLDS, TEST_FOLD = (1, 2, 3), 4
BASE = GateSettings()
RULES = {  # the gate's entry rule, each beside today's
    "today: one window at p >= 0.4": BASE,
    "two windows in a row": replace(BASE, enter_windows=2),
    **{f"two in a row, or one at p >= {p:g}": replace(BASE, enter_windows=2, sure_confidence=p)
       for p in (0.5, 0.6, 0.7, 0.8)},
    **{f"one window at p >= {p:g}": replace(BASE, min_confidence=p) for p in (0.5, 0.6)},
}


def mode_rules(mode: str) -> dict[str, GateSettings]:
    """Entry rules in a mode's gate (its hold and the rest): two windows in a row at p >= m, or one at p >= s."""
    own = replace(BASE, **{k: v for k, v in MODE_DEFAULTS[mode].items() if hasattr(BASE, k)})
    two = [(0.3, 0.6), (0.3, 0.7), (0.3, 0.8), (0.3, 0.9), (0.4, 0.6), (0.4, 0.7), (0.5, 0.7), (0.6, 0.7)]
    rules = {f"two in a row at p >= {m:g}, or one at p >= {p:g}":
             replace(own, enter_windows=2, min_confidence=m, sure_confidence=p) for m, p in two}
    rules.update({f"one window at p >= {p:g}": replace(own, enter_windows=1, min_confidence=p)
                  for p in (0.6, 0.65, 0.7, 0.75, 0.8)})
    return {f"{name} (the {mode}'s)" if gate == own else name: gate for name, gate in rules.items()}


class Event:
    """One clip after silence: the windows the app's schedule sends around its onset, heard once."""

    def __init__(self, name: str, fold: int, clip: np.ndarray, phases: int):
        stream = np.concatenate([np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32), clip,
                                 np.zeros(4 * SAMPLE_RATE, np.float32)])
        self.name, self.fold, self.onset = name, fold, LEAD_S + onset(clip)
        ring, block, detected = RingBuffer(), int(FILE_BLOCK_SECONDS * SAMPLE_RATE), None
        for s in range(0, len(stream), block):
            ring.write(stream[s:s + block])
            if sound_began(ring.latest()):
                detected = (s + block) / SAMPLE_RATE
                break
        turns = np.round(np.arange(self.onset + HEARD_S[0], self.onset + HEARD_S[1], TURN_S), 2)
        self.sent = []  # per phase: the end times of the windows sent
        for phase in np.linspace(0.0, HOP_S, phases, endpoint=False):
            clock = WindowClock(HOP_S, turns[0] - HOP_S + phase, LOOKS_AFTER_ONSET)
            sent = []
            for now in turns:
                if detected is not None and abs(now - detected) < TURN_S / 2:
                    clock.sound_began(now)
                if clock.due(now):
                    sent.append(float(now))
            self.sent.append(sent)
        self.ends = sorted({t for sent in self.sent for t in sent})
        self.windows = np.stack([stream[int(round(e * SAMPLE_RATE)) - audio.N_SAMPLES:int(round(e * SAMPLE_RATE))]
                                 for e in self.ends])
        self.dbfs = {e: audio.rms_dbfs(w) for e, w in zip(self.ends, self.windows)}


@torch.no_grad()
def heard(model, wins: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Each window as the server hears it (from its onset): the embedding the probe reads, and the AudioSet tags."""
    emb = heard_embeddings(model, wins, batch)
    return emb.numpy(), model.backbone.tag_logits(emb).sigmoid().numpy()


def training_features(model, ds, recipe: TaggerRecipe) -> tuple[np.ndarray, np.ndarray]:
    """Every clip's windows and first look, embedded once (cached): (features, clip of each row)."""
    path = cache_dir() / "first_label_bench_train.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["features"], z["owner"]
    X, owner = clip_embeddings(model, ds.waveforms, progress=False)
    early, early_owner = early_windows(ds.waveforms, recipe.early_looks_s)
    features = np.concatenate([X.numpy(), heard_embeddings(model, early).numpy()])
    owner = np.concatenate([owner.numpy(), early_owner])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=features, owner=owner)
    return features, owner


def probe(features, owner, labels, folds, train_folds, n_classes: int, l2: float) -> tuple[np.ndarray, np.ndarray]:
    rows = np.isin(folds[owner], train_folds)
    head = torch.nn.Module()
    head.head = torch.nn.Linear(features.shape[1], n_classes)
    fit_head(head, torch.from_numpy(features[rows]), torch.from_numpy(labels[owner[rows]]), n_classes, l2)
    return head.head.weight.detach().numpy(), head.head.bias.detach().numpy()


class ClassSet:
    """The model as a client with a class set hears it: its names, the model's tags."""

    def __init__(self, model, class_names: list[str]):
        self.class_names, self.tag_names, self.model_classes = class_names, model.tag_names, model.class_names


def scores(model, events, heard_by, heads, gate: GateSettings) -> dict:
    times, wrong = [], []
    for e in events:
        W, b = heads[e.fold]
        emb, tags = heard_by[id(e)]
        logits = emb @ W.T + b
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        if isinstance(model, ClassSet):
            probs = restrict(probs, model.model_classes, model.class_names)
        index = {t: i for i, t in enumerate(e.ends)}
        for sent in e.sent:
            rows = [index[t] for t in sent]
            shown = gated(model, gate, probs[rows], tags[rows], [e.dbfs[t] for t in sent], sent)
            after = [(label, t - e.onset) for label, t in zip(shown, sent) if label is not None and t >= e.onset]
            times.append(next((t for label, t in after if label == e.name), np.inf))
            wrong.append(bool(after) and after[0][0] != e.name)
    times = np.array(times)
    return dict(median_s=float(np.median(times)), named_by_0_6_s=float(np.mean(times <= 0.6)),
                named_by_1_s=float(np.mean(times <= 1.0)), never=float(np.mean(np.isinf(times))),
                wrong_first=float(np.mean(wrong)), runs=len(times))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--per-class", type=int, default=2, help="clips of each class from each fold")
    p.add_argument("--phases", type=int, default=5, help="start phases of the send schedule within a hop")
    p.add_argument("--mode", choices=["toy"], help="that mode's classes, gate and rules around it")
    p.add_argument("--out", default=None, help="default: runs/first_label_bench[_MODE].json")
    args = p.parse_args()
    torch.set_num_threads(2)
    started = time.time()
    ds = load_dataset(None, progress=False)
    model = build_model(efficientat.NAME, ds.class_names).eval()
    recipe = TaggerRecipe()
    features, owner = training_features(model, ds, recipe)
    heads = {f: probe(features, owner, ds.labels, ds.folds, [g for g in SELECT_FOLDS if g != f], len(ds.class_names),
                      recipe.probe_l2) for f in SELECT_FOLDS}
    heads[TEST_FOLD] = probe(features, owner, ds.labels, ds.folds, SELECT_FOLDS, len(ds.class_names), recipe.probe_l2)
    listener, rules = model, RULES
    if args.mode:
        listener, rules = ClassSet(model, CLASS_SETS[MODE_DEFAULTS[args.mode]["classes"]]), mode_rules(args.mode)
    scored = [ds.class_names.index(c) for c in listener.class_names]
    picked = [i for f in (*SELECT_FOLDS, TEST_FOLD) for c in scored
              for i in np.flatnonzero((ds.labels == c) & (ds.folds == f))[:args.per_class]]
    events = [Event(ds.class_names[ds.labels[i]], int(ds.folds[i]), ds.waveforms[i], args.phases) for i in picked]
    heard_by = {id(e): heard(model, e.windows) for e in events}
    print(f"{len(events)} events, {sum(len(e.ends) for e in events)} windows heard, {time.time() - started:.0f} s",
          flush=True)
    summary = dict(date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {torch.get_num_threads()} threads",
                   per_class=args.per_class, phases=args.phases, mode=args.mode, rules={})
    for name, gate in rules.items():
        select = scores(listener, [e for e in events if e.fold in SELECT_FOLDS], heard_by, heads, gate)
        test = scores(listener, [e for e in events if e.fold == TEST_FOLD], heard_by, heads, gate)
        summary["rules"][name] = dict(gate=asdict(gate), folds_1_3=select, fold_4=test)
        print(f"{name:48s} folds 1-3: median {select['median_s']:.2f} s, by 0.6 s {select['named_by_0_6_s']:.0%}, "
              f"wrong first {select['wrong_first']:.0%} | fold 4: median {test['median_s']:.2f} s, by 0.6 s "
              f"{test['named_by_0_6_s']:.0%}, wrong first {test['wrong_first']:.0%}", flush=True)
    summary["seconds"] = round(time.time() - started)
    out = Path(args.out or f"runs/first_label_bench{'_' + args.mode if args.mode else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
