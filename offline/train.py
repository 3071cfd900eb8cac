"""Teach the sound classifier: fine-tune an ImageNet backbone on log-mel "images", or fit a linear probe on it.

    hear-and-see train                                   # ESC-50 folds 1-3 -> test on fold 4, recipe "best"
    hear-and-see train --test-folds none --out models/checkpoints/esc50_efficientnet_lite0.pt
    hear-and-see train --recipe paper                    # the paper's SGD recipe, no augmentation
    hear-and-see train --probe                           # frozen features + logistic regression (minutes)
    hear-and-see train --data ~/venue --group-pattern '^(.+)_\\d+$'   # a folder per class

Training sees a random 4 s crop of each clip (ESC-50 clips are 5 s) every epoch; testing averages the
class probabilities of 4 s windows every 0.5 s across the whole clip (0, 0.5 and 1 s for a 5 s clip), the
same thing the live app does over time. Everything runs in the main process: on 2 cores, worker processes
only steal time from the network.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UserError
from models import audio
from offline import NUM_THREADS
from offline.datasets import ClipSet, load_dataset, windows
from offline.metrics import scores
from models.model import Ensemble, SoundClassifier, TaggingClassifier, build_model, save_checkpoint
from models.waveform_cnn import NAME as WAVEFORM_CNN, WaveformCNN

log = logging.getLogger("hear-and-see.train")


@dataclass
class Recipe:
    # optimisation
    optimizer: str = "adamw"      # adamw | sgd
    lr: float = 1e-3              # peak lr (one-cycle) or the constant lr
    momentum: float = 0.9         # sgd only
    weight_decay: float = 1e-2
    schedule: str = "onecycle"    # onecycle (warm up 10 %, cosine down) | constant
    epochs: int = 25
    batch_size: int = 32
    label_smoothing: float = 0.1
    # augmentation
    crop: str = "energy"          # energy: random 4 s crop holding >= half the clip's energy | random | start
    roll: float = 0.5             # probability of a circular shift of the clip before cropping
    gain_db: float = 6.0          # random gain +-gain_db: features are absolute dB, venue mics are not calibrated
    mixup_alpha: float = 0.2      # 0 disables; mixes log-mels and targets with lam ~ Beta(alpha, alpha)
    specaugment: bool = True      # 2 frequency masks (<= 16 bins) and 2 time masks (<= 32 frames)
    stretch_pitch: int = 0        # variants per clip made offline with librosa (slow); 0 disables
    # evaluation
    test_hop: float = 0.5         # seconds between the 4 s test windows
    eval_every: int = 5           # epochs between test evaluations during training (0: only at the end)

    def __post_init__(self):
        for name, allowed in (("optimizer", ("adamw", "sgd")), ("schedule", ("onecycle", "constant")),
                              ("crop", ("energy", "random", "start"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"recipe {name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")


RECIPES = {
    # what ships: AdamW one-cycle, mixup, SpecAugment, label smoothing, energy-aware crops
    "best": Recipe(),
    # the paper's recipe: SGD, lr 1e-3, momentum 0.9, weight decay 5e-4, clips padded/cut at the start
    "paper": Recipe(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, schedule="constant",
                    label_smoothing=0.0, crop="start", roll=0.0, gain_db=0.0, mixup_alpha=0.0,
                    specaugment=False),
    # the raw-waveform 1-D CNN (a comparison row): from scratch, so a higher peak lr and more epochs
    "waveform": Recipe(lr=3e-3, epochs=40, specaugment=False),
}


# ----------------------------------------------------------------------------------------------------------
# batches

def crop_batch(waves: list[np.ndarray], rng: np.random.Generator, r: Recipe, train: bool = True) -> np.ndarray:
    """List of clips -> (B, N_SAMPLES) training windows."""
    n = audio.N_SAMPLES
    out = np.zeros((len(waves), n), dtype=np.float32)
    for i, w in enumerate(waves):
        if train and r.roll > 0 and rng.random() < r.roll:
            w = np.roll(w, int(rng.integers(len(w))))
        if len(w) <= n:  # short clip: place it anywhere in the window (at the start for "start")
            s = int(rng.integers(n - len(w) + 1)) if train and r.crop != "start" else 0
            out[i, s:s + len(w)] = w
            continue
        if not train or r.crop == "start":
            out[i] = w[:n]
            continue
        if r.crop == "energy":
            # uniform over the crops that hold at least half of the clip's energy (almost all of them for a
            # sound that fills the clip; only those that keep the bark for a short bark at the edge), else
            # the loudest crop: a crop of silence labelled "dog" teaches nothing but guessing
            c = np.concatenate([[0.0], np.cumsum(np.square(w, dtype=np.float64))])
            e = c[n:] - c[:-n]  # energy of the crop starting at each sample
            good = np.flatnonzero(e >= 0.5 * c[-1])
            start = int(rng.choice(good)) if len(good) else int(np.argmax(e))
        else:
            start = int(rng.integers(len(w) - n + 1))
        out[i] = w[start:start + n]
    if train and r.gain_db > 0:
        out *= (10.0 ** (rng.uniform(-r.gain_db, r.gain_db, size=(len(waves), 1)) / 20.0)).astype(np.float32)
    return out


def spec_augment(mel: torch.Tensor, gen: torch.Generator, n_freq=2, max_freq=16, n_time=2, max_time=32):
    """Mask bands of frequency and time with each example's floor value (what silence looks like)."""
    mel = mel.clone()
    B, M, T = mel.shape
    floor = mel.amin(dim=(1, 2))
    for b in range(B):
        for _ in range(n_freq):
            w = int(torch.randint(0, max_freq + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, M - w + 1, (1,), generator=gen))
            mel[b, f0:f0 + w, :] = floor[b]
        for _ in range(n_time):
            w = int(torch.randint(0, max_time + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, T - w + 1, (1,), generator=gen))
            mel[b, :, t0:t0 + w] = floor[b]
    return mel


def stretch_pitch_variants(waves: list[np.ndarray], k: int, seed: int = 0) -> list[list[np.ndarray]]:
    """k time-stretched (0.85-1.15x) or pitch-shifted (+-2 semitones) copies per clip, made once before
    training because librosa's phase vocoder is far too slow to run per batch on 2 cores."""
    import librosa
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    out = []
    for w in tqdm(waves, desc="stretch/pitch", unit="clip", mininterval=5):
        vs = []
        for _ in range(k):
            if rng.random() < 0.5:
                v = librosa.effects.time_stretch(w, rate=float(rng.uniform(0.85, 1.15)))
            else:
                v = librosa.effects.pitch_shift(w, sr=audio.SAMPLE_RATE, n_steps=float(rng.uniform(-2, 2)))
            vs.append(v.astype(np.float32))
        out.append(vs)
    return out


# ----------------------------------------------------------------------------------------------------------
# evaluation over windows

@torch.no_grad()
def clip_probabilities(model: SoundClassifier | Ensemble, waves: list[np.ndarray], hop: float = 0.5,
                       batch_size: int = 64) -> np.ndarray:
    """(n_clips, n_classes): the mean of the class probabilities over 4 s windows every `hop` s covering each
    clip, each window heard as the server hears it (`predict`)."""
    model.eval()
    wins = [windows(w, hop) for w in waves]
    owner = np.concatenate([np.full(len(x), i) for i, x in enumerate(wins)])
    flat = np.concatenate(wins)
    probs = np.concatenate([model.predict(flat[s:s + batch_size]) for s in range(0, len(flat), batch_size)])
    out = np.zeros((len(waves), probs.shape[1]), dtype=np.float64)
    np.add.at(out, owner, probs)
    return out / np.bincount(owner, minlength=len(waves))[:, None]


@torch.no_grad()
def clip_embeddings(model: SoundClassifier | TaggingClassifier, waves: list[np.ndarray], hop: float = 0.5, batch_size: int = 64,
                    progress: bool = True):
    """(windows, feature_dim) embeddings of every window, and the clip index of each window."""
    from tqdm import tqdm

    model.eval()
    wins = [windows(w, hop) for w in waves]
    owner = np.concatenate([np.full(len(x), i) for i, x in enumerate(wins)])
    flat = np.concatenate(wins)
    feats = []
    for s in tqdm(range(0, len(flat), batch_size), desc="embed", unit="batch", disable=not progress,
                  mininterval=5):
        feats.append(model.embed(torch.from_numpy(flat[s:s + batch_size])))
    return torch.cat(feats), torch.from_numpy(owner)


# ----------------------------------------------------------------------------------------------------------
# fine-tuning

def fine_tune(model: SoundClassifier, train_set: ClipSet, r: Recipe, test_set: ClipSet | None = None,
              seed: int = 0, progress: bool = True, last_path: Path | None = None) -> dict:
    """Train `model` in place; returns the history (loss per epoch, test accuracy where evaluated)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(memory_format=torch.channels_last)  # ~1.5x faster convolutions on CPU
    if r.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / r.batch_size)
    total = steps_per_epoch * r.epochs
    if r.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=total, pct_start=0.1)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    variants = stretch_pitch_variants(train_set.waveforms, r.stretch_pitch, seed) if r.stretch_pitch else None
    labels = torch.from_numpy(train_set.labels)
    n_classes = len(train_set.class_names)
    history = dict(epoch=[], loss=[], train_acc=[], lr=[], seconds=[], test_epoch=[], test_acc=[],
                   test_macro_f1=[])
    for epoch in range(1, r.epochs + 1):
        model.train()
        t0 = time.time()
        order = rng.permutation(len(train_set))
        tot_loss = tot_correct = seen = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{r.epochs}", unit="batch",
                   disable=not progress, mininterval=5)
        for step in bar:
            idx = order[step * r.batch_size:(step + 1) * r.batch_size]
            waves = [train_set.waveforms[i] if variants is None or rng.random() < 0.5
                     else variants[i][int(rng.integers(len(variants[i])))] for i in idx]
            x = model.inputs(torch.from_numpy(crop_batch(waves, rng, r)))
            y = F.one_hot(labels[idx], n_classes).float()
            if r.specaugment:
                x = spec_augment(x, gen)
            if r.mixup_alpha > 0 and len(idx) > 1:
                lam = float(rng.beta(r.mixup_alpha, r.mixup_alpha))
                perm = torch.from_numpy(rng.permutation(len(idx)))
                x = lam * x + (1 - lam) * x[perm]
                y = lam * y + (1 - lam) * y[perm]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(idx)
            tot_correct += int((logits.argmax(-1) == y.argmax(-1)).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{tot_loss / seen:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        bar.close()
        secs = time.time() - t0
        for k, v in dict(epoch=epoch, loss=tot_loss / seen, train_acc=tot_correct / seen,
                         lr=sched.get_last_lr()[0], seconds=secs).items():
            history[k].append(v)
        msg = f"epoch {epoch:3d}  loss {tot_loss / seen:.4f}  train acc {tot_correct / seen:.3f}  {secs:.0f} s"
        if test_set is not None and (epoch == r.epochs or (r.eval_every and epoch % r.eval_every == 0)):
            s = scores(test_set.labels, clip_probabilities(model, test_set.waveforms, r.test_hop),
                       test_set.class_names)
            history["test_epoch"].append(epoch)
            history["test_acc"].append(s["accuracy"])
            history["test_macro_f1"].append(s["macro_f1"])
            msg += f"  test acc {s['accuracy']:.4f}  macro-F1 {s['macro_f1']:.4f}"
        log.info(msg)
        if last_path is not None:  # a run cut short still leaves its latest weights
            save_checkpoint(model, last_path, recipe=asdict(r), metrics=dict(epochs_done=epoch, partial=True))
    model.eval()
    return history


# ----------------------------------------------------------------------------------------------------------
# linear probe

def linear_probe(model: SoundClassifier, train_set: ClipSet, hop: float = 0.5, l2: float = 1e-3,
                 iters: int = 300, feats=None, progress: bool = True) -> SoundClassifier:
    """Freeze the backbone, embed every training window once, fit multinomial logistic regression (L-BFGS,
    full batch) on standardised features, and fold the standardisation into `model.head`."""
    X, owner = feats if feats is not None else clip_embeddings(model, train_set.waveforms, hop, progress=progress)
    y = torch.from_numpy(train_set.labels)[owner]
    fit_head(model, X, y, len(train_set.class_names), l2, iters)
    return model


def fit_head(model: SoundClassifier, X: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-3,
             iters: int = 300) -> None:
    X = X.double()
    mean, std = X.mean(0), X.std(0).clamp(min=1e-6)
    Z = (X - mean) / std
    W = torch.zeros(X.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(Z @ W + b, y) + l2 * (W ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():  # logits = ((x - mean) / std) @ W + b = x @ (W / std) + (b - (mean / std) @ W)
        Ws = W / std[:, None]
        model.head.weight.copy_(Ws.T.float())
        model.head.bias.copy_((b - mean @ Ws).float())


# ----------------------------------------------------------------------------------------------------------
# the whole run

def train(data: str | Path | None = None, layout: str | None = None, test_folds=(4,), train_folds=None,
          recipe: str | Recipe = "best", probe: bool = False, backbone: str = "efficientnet_lite0",
          pretrained: bool = True, weights_path: str | None = None, out: str | Path | None = None,
          group_pattern: str | None = None, max_per_class: int | None = None, seed: int = 0,
          metrics_from: str | Path | None = None, metrics_json: str | Path | None = None, progress: bool = True,
          init_from: str | Path | None = None, random_split: bool = False, recipe_name: str | None = None,
          **overrides) -> dict:
    """Train on `train_folds` (default: every fold not in `test_folds`), test on `test_folds` (empty: no
    test), save a checkpoint to `out` when given. `overrides` replace fields of the recipe (epochs=3).
    `metrics_from`: the JSON of a held-out run of the same recipe, whose metrics the checkpoint keeps;
    `metrics_json`: where to write this run's metrics, recipe and history.
    `random_split` holds out as many clips as `test_folds` hold, drawn at random instead: the leak
    demonstration, since takes of one source recording then sit on both sides.
    Returns dict(model, metrics, recipe, history)."""

    torch.set_num_threads(NUM_THREADS)
    t_start = time.time()
    r = RECIPES[recipe] if isinstance(recipe, str) else recipe
    r = replace(r, **{k: v for k, v in overrides.items() if v is not None})
    recipe_name = recipe_name or (recipe if isinstance(recipe, str) else "custom")
    test_folds = tuple(test_folds or ())
    ds = load_dataset(data, layout, group_pattern=group_pattern, max_per_class=max_per_class, progress=progress)
    test_mask = np.isin(ds.folds, test_folds)
    if random_split:
        test_mask = np.zeros(len(ds), dtype=bool)
        test_mask[np.random.default_rng(seed).permutation(len(ds))[:int(np.isin(ds.folds, test_folds).sum())]] = True
    train_mask = ~test_mask
    if train_folds:
        train_mask &= np.isin(ds.folds, list(train_folds))
    train_set = ds.subset(np.flatnonzero(train_mask))
    test_set = ds.subset(np.flatnonzero(test_mask)) if test_folds else None
    if test_set is not None and len(test_set) == 0:
        raise UserError(f"no clips in test folds {list(test_folds)}; use --test-folds none to train on all")
    log.info("%s", ds.summary())
    log.info("train: %d clips (folds %s), test: %d clips (folds %s); %s: %s", len(train_set),
             sorted(set(train_set.folds.tolist())), 0 if test_set is None else len(test_set),
             list(test_folds), "probe" if probe else f"recipe {recipe_name}", asdict(r))
    if len(train_set) == 0:
        raise UserError("no training clips: check --data and the folds")
    if backbone == WAVEFORM_CNN:
        if probe or init_from is not None or out is not None or r.specaugment:
            raise UserError(f"{WAVEFORM_CNN} is a comparison row: fine-tuning from scratch with --recipe waveform "
                             "(no SpecAugment), scored but never saved, probed or continued")
        model = WaveformCNN(ds.class_names)
    elif init_from is not None:  # continue from a trained classifier (same classes), e.g. to add a held-out fold
        from models.model import load_model
        model = load_model(init_from, backbone=backbone)
        if model.class_names != ds.class_names:
            raise UserError(f"{init_from}: classes differ from the dataset's; cannot continue from it")
    else:
        model = build_model(backbone, ds.class_names, pretrained=pretrained, weights_path=weights_path)
    last_path = None
    if out is not None and not probe:
        last_path = Path("runs") / (Path(out).stem + ".last.pt")
    if probe:
        history = {}
        linear_probe(model, train_set, r.test_hop, progress=progress)
    else:
        history = fine_tune(model, train_set, r, test_set, seed, progress, last_path)
    model.eval()
    metrics = dict(train_clips=len(train_set), train_folds=sorted(set(train_set.folds.tolist())),
                   train_seconds=round(time.time() - t_start, 1), skipped=len(ds.skipped))
    if test_set is not None and len(test_set):
        s = scores(test_set.labels, clip_probabilities(model, test_set.waveforms, r.test_hop),
                   test_set.class_names)
        metrics.update(test_folds="random" if random_split else list(test_folds), test_clips=len(test_set),
                       accuracy=s["accuracy"], macro_f1=s["macro_f1"])
        log.info("test %s: accuracy %.4f  macro-F1 %.4f", "random clips" if random_split else
                 f"folds {list(test_folds)}", s["accuracy"], s["macro_f1"])
    if metrics_from:
        held = json.loads(Path(metrics_from).read_text())
        metrics.update(held_out=held.get("metrics", held))
    recipe_rec = dict(name="linear_probe" if probe else recipe_name, backbone=backbone, pretrained=pretrained,
                      dataset=ds.name, seed=seed, init_from=None if init_from is None else str(init_from),
                      **({} if probe else asdict(r)))
    if out is not None:
        model.trained = True
        save_checkpoint(model, out, recipe=recipe_rec, metrics=metrics)
        log.info("saved %s (%.1f MB)", out, Path(out).stat().st_size / 1e6)
        if last_path is not None and last_path.exists():
            last_path.unlink()
    if ds.skipped:
        log.warning("%d file(s) skipped:\n%s", len(ds.skipped), "\n".join(f"  {p}: {w}" for p, w in ds.skipped))
    if metrics_json:
        Path(metrics_json).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics_json).write_text(json.dumps(dict(metrics=metrics, recipe=recipe_rec, history=history), indent=1))
    return dict(model=model, metrics=metrics, recipe=recipe_rec, history=history)


def write_ensemble(paths: list[str | Path], out: str | Path) -> str:
    """One checkpoint serving the mean of the checkpoints at `paths`; returns what was written."""
    from models.model import ensemble_of

    model, metrics = ensemble_of(paths)
    save_checkpoint(model, out, recipe=dict(name="ensemble"), metrics=metrics)
    return (f"{out}: {len(model.members)} members of {model.backbone.name}, "
            f"{Path(out).stat().st_size / 1e6:.1f} MB, held-out folds {metrics['test_folds'] or 'none'}")
