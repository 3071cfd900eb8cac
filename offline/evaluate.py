"""How good is the classifier, measured honestly; and `classify` for files.

    hear-and-see evaluate checkpoints runs/fold4.pt --folds 4      # score a checkpoint on held-out folds
    hear-and-see evaluate checkpoints runs/cv_fold{1,2,3,4}.pt      # pooled CV: each on its own held-out fold
    hear-and-see evaluate checkpoints a.pt b.pt --ensemble          # two models' mean, on the folds both held out
    hear-and-see evaluate cv --probe                                # 4-fold CV, frozen features (minutes)
    hear-and-see evaluate cv --recipe best --epochs 20              # 4-fold CV of fine-tuning (hours on 2 cores)
    hear-and-see evaluate cv --probe --leak                         # fold split vs random clip split
    hear-and-see evaluate false-triggers                            # silence and noise through the gate
    hear-and-see evaluate events-in-noise --folds 4                 # events in a noisy room, through the gate
    hear-and-see classify dog.wav street.mp3 [--checkpoint X] [--json]

Scores are per clip: a clip's probabilities are the mean over 4 s windows every 0.5 s across it.
ESC-50's folds keep the takes of one source recording together; a random clip split does not, and
`evaluate cv --leak` shows how much that flatters the same recipe.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models import audio
from offline import NUM_THREADS
from offline.datasets import load_dataset, windows
from offline.metrics import scores
from models.gate import GateSettings, OpenSetGate
from models.classes import class_set_probabilities, resolve_class_set, restrict
from models.model import SHIPPED_CHECKPOINT, CheckpointError, ensemble_of, hear, load_model, load_with_metrics

log = logging.getLogger("hear-and-see.evaluate")


# ----------------------------------------------------------------------------------------------------------
# trained checkpoints on held-out folds

ALL_FOLDS = (1, 2, 3, 4)  # ESC-50's fold 5 is kept out of shared/ on purpose


def within_class_set(labels, probs, class_names, subset):
    """Clips of `subset`'s classes only, scored as the app shows a class set: outputs restricted to the set and
    renormalised (so a dog's bark cannot be called a door knock in the toy). Returns (labels, probs)."""
    keep = np.isin(labels, [class_names.index(c) for c in subset])
    remap = {class_names.index(c): i for i, c in enumerate(subset)}
    return np.array([remap[int(y)] for y in labels[keep]], dtype=np.int64), restrict(probs[keep], class_names, subset)


def score_checkpoints(paths, data=None, folds=None, ensemble=False, classes=None) -> tuple[dict, list[str], str]:
    """Score each checkpoint on `folds`, or on the folds its training held out (recorded in it), and pool the
    clips: given the four models of a cross-validation, the pooled scores are the CV scores, with one report
    and one confusion matrix over all 1600 clips. With `ensemble`, the checkpoints are scored as one model,
    their averaged probabilities, on the folds held out from all of them. With `classes` (a class set such as
    "animals"), only those classes' clips and outputs count. Returns (scores, names, tag)."""
    from offline.train import clip_probabilities

    if ensemble:
        model, metrics = ensemble_of(paths)
        if not metrics["test_folds"] and not folds:
            raise ValueError("no fold is held out from every member of the ensemble: give --folds")
        tag = f"{Path(paths[0]).stem}_ensemble_{len(paths) - 1}_more"
        entries = [(tag, model, metrics)]
    else:
        entries = [(str(path), *load_with_metrics(path)) for path in paths]
        tag = Path(paths[0]).stem if len(paths) == 1 else f"{Path(paths[0]).stem}_and_{len(paths) - 1}_more"
    labels, probs, per_model, names = [], [], [], None
    t0 = time.time()
    for name, model, metrics in entries:
        held_out = metrics.get("test_folds")
        use = list(folds or (held_out if isinstance(held_out, list) and held_out else ALL_FOLDS))
        trained_on = set(metrics.get("train_folds", [])) & set(use)
        if trained_on or held_out == "random":
            log.warning("%s was trained on %s: its scores on folds %s are not held-out", name,
                        f"folds {sorted(trained_on)}" if trained_on else "random clips of every fold", use)
        ds = load_dataset(data, folds=use)
        if ds.class_names != model.class_names:
            raise CheckpointError(f"{name}: classes differ from the dataset's")
        subset = resolve_class_set(classes, ds.class_names)
        if subset:
            ds = ds.subset(np.flatnonzero(np.isin(ds.labels, [ds.class_names.index(c) for c in subset])))
        y, p = ds.labels, clip_probabilities(model, ds.waveforms)
        if subset:
            y, p = within_class_set(y, p, ds.class_names, subset)
        names = subset or ds.class_names
        s = scores(y, p, names)
        per_model.append(dict(checkpoint=name, folds=use, accuracy=s["accuracy"], macro_f1=s["macro_f1"]))
        log.info("%s on folds %s: accuracy %.4f  macro-F1 %.4f", name, use, s["accuracy"], s["macro_f1"])
        labels.append(y)
        probs.append(p)
        if ds.skipped:
            log.warning("%s", ds.summary())
    pooled = scores(np.concatenate(labels), np.concatenate(probs), names)
    accs = [m["accuracy"] for m in per_model]
    pooled.update(per_checkpoint=per_model, mean_accuracy=float(np.mean(accs)), std_accuracy=float(np.std(accs)),
                  mean_macro_f1=float(np.mean([m["macro_f1"] for m in per_model])), seconds=round(time.time() - t0, 1))
    tag += f"_{classes}" if isinstance(classes, str) and classes != "all" else ""
    return pooled, names, tag + (f"_folds{''.join(map(str, folds))}" if folds else "_held_out")


# ----------------------------------------------------------------------------------------------------------
# cross-validation and the leak demonstration

def probe_cross_validation(ds, folds, backbone="efficientnet_lite0", hop=0.5, leak=False, seed=0,
                           pretrained=True, progress=True, l2=1e-3) -> dict:
    """Frozen-feature linear probe, fold by fold. Every window is embedded once, so each fold costs only
    an L-BFGS fit. With `leak`, the same number of splits drawn clip by clip at random instead."""
    from models.model import build_model
    from offline.train import clip_embeddings, fit_head

    torch.set_num_threads(NUM_THREADS)
    model = build_model(backbone, ds.class_names, pretrained=pretrained)
    t0 = time.time()
    X, owner = clip_embeddings(model, ds.waveforms, hop, progress=progress)
    embed_s = time.time() - t0
    splits = _splits(ds, folds, leak, seed)
    results = []
    all_labels, all_probs = [], []
    for name, test_clip in splits:
        win_test = test_clip[owner.numpy()]
        fit_head(model, X[~torch.from_numpy(win_test)], torch.from_numpy(ds.labels)[owner][~torch.from_numpy(win_test)],
                 len(ds.class_names), l2)
        with torch.no_grad():
            p = model.head(X[torch.from_numpy(win_test)]).softmax(-1).double().numpy()
        o = owner.numpy()[win_test]
        idx = np.flatnonzero(test_clip)
        probs = np.stack([p[o == i].mean(0) for i in idx])
        s = scores(ds.labels[idx], probs, ds.class_names)
        log.info("%s: accuracy %.4f  macro-F1 %.4f", name, s["accuracy"], s["macro_f1"])
        results.append(dict(split=name, accuracy=s["accuracy"], macro_f1=s["macro_f1"]))
        all_labels.append(ds.labels[idx])
        all_probs.append(probs)
    pooled = scores(np.concatenate(all_labels), np.concatenate(all_probs), ds.class_names)
    return dict(method="linear_probe", backbone=backbone, leak=leak, splits=results,
                mean_accuracy=float(np.mean([r["accuracy"] for r in results])),
                std_accuracy=float(np.std([r["accuracy"] for r in results])),
                mean_macro_f1=float(np.mean([r["macro_f1"] for r in results])),
                embed_seconds=round(embed_s, 1), seconds=round(time.time() - t0, 1), pooled=pooled)


def _splits(ds, folds, leak, seed):
    """[(name, boolean test mask per clip)]: the dataset's folds, or random clip splits of the same sizes."""
    if not leak:
        return [(f"fold {f}", ds.folds == f) for f in folds]
    order = np.random.default_rng(seed).permutation(len(ds))
    parts = np.array_split(order, len(folds))
    out = []
    for k, part in enumerate(parts):
        m = np.zeros(len(ds), dtype=bool)
        m[part] = True
        out.append((f"random split {k + 1}", m))
    return out


def finetune_cross_validation(data, folds, recipe="best", leak=False, seed=0, **overrides) -> dict:
    """Fine-tune once per fold (hours on 2 cores for ESC-50). With `leak`, random clip splits instead."""
    from offline.train import RECIPES, clip_probabilities, fine_tune
    from models.model import build_model
    from dataclasses import replace

    ds = load_dataset(data)
    r = replace(RECIPES[recipe] if isinstance(recipe, str) else recipe,
                **{k: v for k, v in overrides.items() if v is not None})
    results, all_labels, all_probs = [], [], []
    t0 = time.time()
    for name, test_clip in _splits(ds, folds, leak, seed):
        train_set, test_set = ds.subset(np.flatnonzero(~test_clip)), ds.subset(np.flatnonzero(test_clip))
        model = build_model("efficientnet_lite0", ds.class_names)
        fine_tune(model, train_set, r, None, seed)
        probs = clip_probabilities(model, test_set.waveforms, r.test_hop)
        s = scores(test_set.labels, probs, ds.class_names)
        log.info("%s: accuracy %.4f  macro-F1 %.4f", name, s["accuracy"], s["macro_f1"])
        results.append(dict(split=name, accuracy=s["accuracy"], macro_f1=s["macro_f1"]))
        all_labels.append(test_set.labels)
        all_probs.append(probs)
    pooled = scores(np.concatenate(all_labels), np.concatenate(all_probs), ds.class_names)
    return dict(method=f"fine_tune:{recipe}", leak=leak, splits=results,
                mean_accuracy=float(np.mean([r["accuracy"] for r in results])),
                std_accuracy=float(np.std([r["accuracy"] for r in results])),
                mean_macro_f1=float(np.mean([r["macro_f1"] for r in results])),
                seconds=round(time.time() - t0, 1), pooled=pooled)


# ----------------------------------------------------------------------------------------------------------
# false triggers: what the model and the gate do with no sound event at all

def noise(kind: str, n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    """White, pink (1/f power) or brown (1/f^2 power) noise scaled to `dbfs` RMS; "silence" is digital zero."""
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    x = rng.standard_normal(n)
    if kind in ("pink", "brown"):
        spec = np.fft.rfft(x)
        f = np.arange(len(spec), dtype=float)
        f[0] = 1.0
        x = np.fft.irfft(spec / (np.sqrt(f) if kind == "pink" else f), n)
    elif kind != "white":
        raise ValueError(f"unknown noise {kind!r}")
    x = x / np.sqrt(np.mean(x ** 2)) * 10 ** (dbfs / 20)
    return x.astype(np.float32)


def noise_conditions(seconds: float, seed: int = 0) -> dict[str, np.ndarray]:
    """A room with no event in it: digital silence, and white, pink and brown noise from -60 to -30 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * audio.SAMPLE_RATE)
    streams = {"silence": noise("silence", n, 0, rng)}
    for kind in ("white", "pink", "brown"):
        for dbfs in (-60, -50, -40, -30):
            streams[f"{kind} {dbfs} dBFS"] = noise(kind, n, dbfs, rng)
    return streams


def gated(model, settings: GateSettings, probs: np.ndarray, tags: np.ndarray | None, dbfs, times,
          voiced=None, taught=None) -> list[str | None]:
    """What a fresh gate shows after each of one stream's windows, in order, given what the model heard in them
    (`hear`), their loudness and the times they were heard, as the server's gate would. `voiced`: per window, the
    labels near a taught sound's examples, and `taught` those a taught sound carries (models/taught.Heard)."""
    gate = OpenSetGate(settings, class_names=model.class_names, tag_names=getattr(model, "tag_names", None) or None)
    voiced = voiced if voiced is not None else [()] * len(probs)
    taught = taught if taught is not None else [()] * len(probs)
    return [gate.update(p.tolist(), d, t, None if tags is None else tags[i].tolist(), voiced[i], taught[i])[0]
            for i, (p, d, t) in enumerate(zip(probs, dbfs, times))]


def listen(model, wins: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, list, list]:
    """hear(), and for an ear with taught sounds, per window, the labels near their examples and those they carry."""
    if hasattr(model, "listen"):
        heard = model.listen(wins)
        return heard.probs, heard.tags, heard.voiced, heard.taught
    probs, tags = hear(model, wins)
    return probs, tags, [()] * len(probs), [()] * len(probs)


def false_triggers(model, settings: GateSettings = GateSettings(), streams: dict[str, np.ndarray] | None = None,
                   n_windows: int = 40, hop_seconds: float = 0.5) -> list[dict]:
    """Feed `n_windows` consecutive 4 s windows (every `hop_seconds`) of each stream (default: silence and noise;
    speech or music recordings can be added) through the model and a fresh gate. raw: windows whose top class
    is >= min_confidence (what an ungated display would show); gated: windows where the gate shows a class."""
    length = audio.N_SAMPLES + int(hop_seconds * audio.SAMPLE_RATE) * (n_windows - 1)
    streams = streams if streams is not None else noise_conditions(length / audio.SAMPLE_RATE)
    rows = []
    for name, stream in streams.items():
        stream = np.resize(stream, length) if len(stream) < length else stream  # a short recording loops
        wins = windows(stream, hop_seconds, flush_end=False)[:n_windows]
        probs, tags, voiced, taught = listen(model, wins)
        dbfs, times = [audio.rms_dbfs(w) for w in wins], hop_seconds * np.arange(len(wins))
        shown = gated(model, settings, probs, tags, dbfs, times, voiced, taught)
        tops = Counter(model.class_names[int(p.argmax())] for p in probs)
        rows.append(dict(condition=name, windows=len(probs), gated_shown=sum(s is not None for s in shown),
                         raw_confident=int((probs.max(1) >= settings.min_confidence).sum()),
                         max_prob=float(probs.max()), top_classes=tops.most_common(3)))
    return rows


def events_in_noise(model, waves, labels, gates: dict[str, GateSettings], bed: str = "pink", bed_dbfs: float = -50.0,
                    lead_seconds: float = 6.0, tail_seconds: float = 2.0, hop_seconds: float = 0.5,
                    seed: int = 0) -> dict:
    """What the room-noise gate costs: each clip is played into a steady noise bed (a quiet room) after
    `lead_seconds` of bed alone, windows every `hop_seconds` go through the model and through each gate in
    `gates` (name -> GateSettings), fresh per clip. Per gate, counted in clips: `hit` (the
    clip's class shown while it sounds), `wrong` (another class shown then, if only for one window: flicker),
    `lead_triggers` (anything shown during the bed alone); and `right_windows`, the share of the windows
    showing a class while the clip sounds that show the right one."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    sr, hop = audio.SAMPLE_RATE, int(hop_seconds * audio.SAMPLE_RATE)
    lead = int(lead_seconds * sr)
    counts = {name: dict(hit=0, wrong=0, lead_triggers=0) for name in gates}
    showing_windows = {name: [0, 0] for name in gates}  # windows showing a class while the clip sounds, right ones
    for wave, label in tqdm(list(zip(waves, labels)), desc="events in noise", unit="clip", mininterval=10):
        stream = noise(bed, lead + len(wave) + int(tail_seconds * sr), bed_dbfs, rng)
        stream[lead:lead + len(wave)] += wave
        wins = windows(stream, hop_seconds, flush_end=False)
        probs, tags = hear(model, wins)
        dbfs, times = [audio.rms_dbfs(w) for w in wins], hop_seconds * np.arange(len(wins))
        starts = range(0, len(wins) * hop, hop)
        during = [s + audio.N_SAMPLES > lead and s < lead + len(wave) for s in starts]
        for name, settings in gates.items():
            shown = gated(model, settings, probs, tags, dbfs, times)
            showing = [s for s, on in zip(shown, during) if on and s is not None]
            while_sounding = set(showing)
            showing_windows[name][0] += len(showing)
            showing_windows[name][1] += sum(s == model.class_names[label] for s in showing)
            c = counts[name]
            c["hit"] += model.class_names[label] in while_sounding
            c["wrong"] += bool(while_sounding - {model.class_names[label]})
            c["lead_triggers"] += any(s is not None for s, on, st in zip(shown, during, starts)
                                      if not on and st < lead)
    n = len(waves)
    rows = {name: {k: dict(count=v, share=v / max(1, n)) for k, v in c.items()} for name, c in counts.items()}
    for name, (showing, right) in showing_windows.items():
        rows[name]["right_windows"] = dict(count=right, of=showing, share=right / max(1, showing))
    return dict(bed=bed, bed_dbfs=bed_dbfs, clips=n, gates={k: asdict(v) for k, v in gates.items()}, rows=rows)


# ----------------------------------------------------------------------------------------------------------
# classify files

def classify(files, checkpoint=None, json_out=False, hop=0.5, top=3, stream=None, classes=None,
             taught_dir=None) -> int:
    """Print each file's class probabilities (mean over 4 s windows every `hop` s) over the class set `classes`
    (default: every class of the model, and the venue's taught sounds in `taught_dir`), and the strongest AudioSet
    tags where the model has them. Returns the number of files that could not be read (each is named on stderr; the
    others are still classified)."""
    from models.taught import TaughtEar

    stream = stream or sys.stdout
    torch.set_num_threads(NUM_THREADS)
    model = load_model(checkpoint)
    tag_names = list(getattr(model, "tag_names", None) or ())
    if taught_dir is not None and tag_names:
        model = TaughtEar(model, taught_dir)
    taught = [s.name for s in getattr(model, "sounds", [])]
    names = resolve_class_set(classes, model.class_names, tag_names)
    names = (names + [n for n in taught if n in model.class_names and n not in names]) if names is not None \
        else model.class_names
    failed = 0
    for f in files:
        try:
            wave = audio.load_audio(f)
        except audio.AudioFileError as exc:
            print(f"hear-and-see classify: {exc}", file=sys.stderr)
            failed += 1
            continue
        wins = windows(wave, hop)
        heard = [hear(model, wins[s:s + 32]) for s in range(0, len(wins), 32)]
        model_probs = np.concatenate([p for p, _ in heard]).mean(0)
        tags = np.concatenate([t for _, t in heard]).mean(0) if tag_names else None
        probs = class_set_probabilities(model_probs, model.class_names, names, tags, tag_names)
        order = np.argsort(-probs)
        strongest = [] if tags is None else [[tag_names[i], round(float(tags[i]), 4)] for i in np.argsort(-tags)[:5]]
        if json_out:
            print(json.dumps(dict(file=str(f), seconds=round(len(wave) / audio.SAMPLE_RATE, 3), windows=len(wins),
                                  dbfs=round(audio.rms_dbfs(wave), 2), top=names[order[0]],
                                  probabilities={n: round(float(p), 6) for n, p in zip(names, probs)},
                                  tags=strongest, taught=taught)),
                  file=stream)
        else:
            best = ", ".join(f"{names[i]} {probs[i]:.2f}" for i in order[:top])
            heard_as = f"  (AudioSet: {', '.join(f'{n} {p:.2f}' for n, p in strongest[:3])})" if strongest else ""
            print(f"{f}: {best}{heard_as}", file=stream)
    return failed


# ----------------------------------------------------------------------------------------------------------
# reports: what `hear-and-see evaluate ...` prints and keeps; each writes out_dir/summary.json or its own report

def _summary(out_dir: str | Path, summary: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"summary in {out_dir / 'summary.json'}")


def report_checkpoints(paths, out_dir, data=None, folds=None, ensemble=False, classes=None) -> None:
    from offline.metrics import report_text, write_report

    s, names, tag = score_checkpoints(paths, data, folds, ensemble, classes)
    write_report(s, names, out_dir, tag)
    print(report_text(s))
    print(f"\nreport, JSON and confusion matrix in {out_dir}/{tag}*")


def report_cross_validation(out_dir, data=None, folds=None, probe=False, leak=False, recipe="best",
                            epochs=None) -> None:
    from offline.metrics import write_report

    summary = {}
    ds = load_dataset(data)
    for random_split in [False] + ([True] if leak else []):
        if probe:
            res = probe_cross_validation(ds, folds or ALL_FOLDS, leak=random_split)
        else:
            res = finetune_cross_validation(data, folds or ALL_FOLDS, recipe, leak=random_split, epochs=epochs)
        tag = f"{'probe' if probe else recipe}_{'random_split' if random_split else 'folds'}"
        write_report(res["pooled"], ds.class_names, out_dir, tag)
        summary[tag] = {k: v for k, v in res.items() if k != "pooled"}
        print(f"{tag}: mean accuracy {res['mean_accuracy']:.4f} +- {res['std_accuracy']:.4f}, "
              f"macro-F1 {res['mean_macro_f1']:.4f}  ({res['splits']})")
    _summary(out_dir, summary)


def report_false_triggers(out_dir, gate: GateSettings, checkpoint=None, sounds=()) -> None:
    """Silence, noise and `sounds` (recordings with no event of the class set in them) through the model and gate."""
    model = load_model(checkpoint)
    streams = {**noise_conditions(23.5), **{Path(f).name: audio.load_audio(f) for f in sounds}}
    rows = false_triggers(model, gate, streams)
    for r in rows:
        print(f"{r['condition']:<22} raw confident {r['raw_confident']:3d}/{r['windows']}  "
              f"gate shows {r['gated_shown']:3d}/{r['windows']}  max p {r['max_prob']:.2f}  top {r['top_classes']}")
    _summary(out_dir, dict(false_triggers=dict(gate=asdict(gate), checkpoint=str(checkpoint or SHIPPED_CHECKPOINT),
                                               rows=rows)))


def report_events_in_noise(out_dir, gates: dict[str, GateSettings], checkpoint=None, data=None, folds=None,
                           bed_dbfs: float = -50.0) -> None:
    """The clips of `folds` played into a steady noise bed, through each of `gates`."""
    model = load_model(checkpoint)
    ds = load_dataset(data, folds=folds or ALL_FOLDS)
    res = events_in_noise(model, ds.waveforms, ds.labels, gates, bed_dbfs=bed_dbfs)
    res["checkpoint"], res["folds"] = str(checkpoint or SHIPPED_CHECKPOINT), list(folds or ALL_FOLDS)
    for name, row in res["rows"].items():
        print(f"{name:<36} " + "  ".join(f"{k} {v['count']}/{v.get('of', res['clips'])} ({v['share']:.1%})"
                                        for k, v in row.items()))
    _summary(out_dir, dict(events_in_noise=res))
