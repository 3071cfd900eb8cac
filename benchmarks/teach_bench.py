"""Taught sounds, measured (BENCHMARKS.md, "Taught sounds").

    python benchmarks/teach_bench.py embed       # every ESC-50 clip through the ear once (cached; minutes)
    python benchmarks/teach_bench.py classes     # leave-classes-out: choose the head on folds 1-3, score fold 4
    python benchmarks/teach_bench.py voice       # a word taught from 5 espeak-ng voices, heard in others; talk
    python benchmarks/teach_bench.py timing      # time to teach, and the live cost per window against none taught
    python benchmarks/teach_bench.py false-triggers  # evaluate --false-triggers' conditions with ten taught sounds

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
    parts = {"examples": [], "test": []}
    for i, wave in enumerate(ds.waveforms):
        if ds.folds[i] == 4:
            parts["test"].append((i, windows(wave, 0.5)[0]))
            continue
        try:
            parts["examples"] += [(i, w) for w in taught.example_windows(taught.cut_to_sound(wave))]
        except taught.TaughtError:
            pass
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for key, rows in parts.items():
        if CACHE.with_name(f"teach_bench_{key}.npz").is_file():
            continue
        chunks = []
        for s in range(0, len(rows), 256):
            chunks.append(embed(net, np.stack([w for _, w in rows[s:s + 256]])))
            print(f"{key}: {s + 256}/{len(rows)} windows, {time.time() - t0:.0f} s", flush=True)
        np.savez(CACHE.with_name(f"teach_bench_{key}.npz"), embeddings=np.concatenate(chunks),
                 owner=np.array([i for i, _ in rows]), labels=ds.labels, folds=ds.folds,
                 class_names=np.array(ds.class_names))
    print(f"cached {len(ds.waveforms)} clips in {time.time() - t0:.0f} s", flush=True)


def load_part(key: str) -> dict:
    with np.load(CACHE.with_name(f"teach_bench_{key}.npz")) as z:
        return {k: z[k] for k in z.files}


def fit_known(X: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The project's probe recipe (offline.train.fit_head, L2 as train_tagger.PROBE_L2): (W, b) of n classes."""
    from offline.train import fit_head
    from offline.train_tagger import PROBE_L2

    head = torch.nn.Module()
    head.head = torch.nn.Linear(X.shape[1], n)
    fit_head(head, torch.from_numpy(X), torch.from_numpy(y), n, l2=PROBE_L2)
    return head.head.weight.detach().numpy(), head.head.bias.detach().numpy()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)


def taught_scores(emb: np.ndarray, examples: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    cos = unit(emb) @ unit(examples).T
    return np.stack([cos[:, owner == j].max(1) for j in range(n)], 1)


def joint(logits: np.ndarray, scores: np.ndarray, temperature: float, center: float) -> np.ndarray:
    """TaughtEar.listen's rule with one member: the known classes' softmax shares what the taught sounds leave."""
    z = np.concatenate([logits, temperature * (scores - center)], 1)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


class Splits:
    """Cached embeddings, and the pieces of one leave-classes-out split."""

    def __init__(self):
        self.test, self.early, self.ex = load_part("test"), load_part("early"), load_part("examples")
        self.labels, self.folds = self.test["labels"], self.test["folds"]
        self.names = list(self.test["class_names"])

    def known_head(self, train_folds, kept: list[int]):
        clip_ok = np.isin(self.folds, train_folds) & np.isin(self.labels, kept)
        rows = [(part["embeddings"][clip_ok[part["owner"]]], self.labels[part["owner"][clip_ok[part["owner"]]]])
                for part in (self.test, self.early)]
        X, y = np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
        remap = {c: i for i, c in enumerate(kept)}
        return fit_known(X, np.array([remap[c] for c in y]), len(kept))

    def examples(self, train_folds, left: list[int], shots: int, rng) -> tuple[np.ndarray, np.ndarray]:
        owner = self.ex["owner"]
        usable = np.unique(owner[np.isin(self.folds[owner], train_folds)])
        vecs, who = [], []
        for j, c in enumerate(left):
            clips = rng.choice(usable[self.labels[usable] == c], shots, replace=False)
            rows = np.isin(owner, clips)
            vecs.append(self.ex["embeddings"][rows]); who += [j] * int(rows.sum())
        return np.concatenate(vecs), np.array(who)

    def run(self, test_fold: int, train_folds, left: list[int], shots: int, rng, grid):
        """{(temperature, center): (taught right, known right, known right by the full model)} on the test fold."""
        kept = [c for c in range(50) if c not in left]
        W, b = self.known_head(train_folds, kept)
        Wf, bf = self.known_head(train_folds, list(range(50)))
        examples, who = self.examples(train_folds, left, shots, rng)
        clips = np.flatnonzero(self.folds == test_fold)
        emb = self.test["embeddings"][clips]   # one window per clip, in clip order (owner == index)
        y = self.labels[clips]
        logits, scores = emb @ W.T + b, taught_scores(emb, examples, who, len(left))
        order = np.array(kept + left)          # column -> class
        full_right = (emb @ Wf.T + bf).argmax(1) == y
        is_left = np.isin(y, left)
        out = {}
        for t, c in grid:
            right = order[joint(logits, scores, t, c).argmax(1)] == y
            out[(t, c)] = (right[is_left].mean(), right[~is_left].mean(), full_right[~is_left].mean())
        return out


GRID = [(t, c) for t in (10.0, 20.0, 30.0, 40.0, 60.0) for c in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)]


def leave_classes_out(draws: int = 10, shots: int = 5) -> dict:
    torch.set_num_threads(2)
    sp = Splits()
    assert np.array_equal(sp.test["owner"], np.arange(len(sp.labels)))
    rng = np.random.default_rng(0)
    tuning = {k: [] for k in GRID}
    for test_fold in (1, 2, 3):
        for _ in range(max(1, draws // 2)):
            left = sorted(rng.choice(50, 10, replace=False).tolist())
            for k, v in sp.run(test_fold, [f for f in (1, 2, 3) if f != test_fold], left, shots, rng, GRID).items():
                tuning[k].append(v)
    means = {k: np.mean(v, 0) for k, v in tuning.items()}
    best = max(GRID, key=lambda k: means[k][0] + means[k][1])
    print("tuning (folds 1-3): temperature center -> taught, known, full model's known")
    for k in GRID:
        print(f"  {k[0]:5.0f} {k[1]:.2f} -> {means[k][0]:.3f} {means[k][1]:.3f} {means[k][2]:.3f}{'  <- chosen' if k == best else ''}")
    scored = []
    for _ in range(draws):
        left = sorted(rng.choice(50, 10, replace=False).tolist())
        scored.append(sp.run(4, [1, 2, 3], left, shots, rng, [best])[best])
    scored = np.array(scored)
    result = dict(chosen=dict(temperature=best[0], center=best[1]), draws=draws, shots=shots,
                  taught_right=float(scored[:, 0].mean()), taught_right_min=float(scored[:, 0].min()),
                  known_right=float(scored[:, 1].mean()), full_model_known_right=float(scored[:, 2].mean()))
    print(json.dumps(result, indent=1))
    return result


# The imitations of the toy's animals, as a child or an adult makes them, taught `as` the animal shown; two
# more of the venue's own (a word and a whistle) make the ten that the false-trigger check runs beside.
WORDS = {"moo": ("mooooo", "cow"), "woof": ("woof woof", "dog"), "meow": ("meeow", "cat"), "oink": ("oink oink", "pig"),
         "cockadoodle": ("cock a doodle doo", "rooster"), "baa": ("baaaa", "sheep"), "ribbit": ("ribbit", "frog"),
         "quack": ("quack quack", None), "tada": ("ta daaa", None)}
TEACH_VOICES = [("en", 120), ("en+f3", 150), ("en-us", 100), ("en+m3", 170), ("en-gb-scotland", 130)]
TEST_VOICES = [("en+f4", 140), ("en-gb-x-rp+m7", 160), ("en-029+f2", 110), ("en-us+croak", 125)]
TALK = ["Could you tell me where the station is, please?", "I think we should go home now, it is getting late.",
        "The children are playing in the garden.", "Look at the big picture on the wall!",
        "My name is Anna and I like animals.", "What a lovely morning it is today."]


def espeak(text: str, voice: str, speed: int, path: Path) -> Path:
    import subprocess

    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return path


def whistle(path: Path, seed: int) -> Path:
    import soundfile

    rng = np.random.default_rng(seed)
    t = np.arange(int(0.9 * 16000)) / 16000
    f0 = 1400 + 100 * rng.standard_normal()
    wave = 0.3 * np.sin(2 * np.pi * (f0 * t + 300 * t ** 2)) * np.minimum(1, t / 0.03) * np.minimum(1, (0.9 - t) / 0.1)
    soundfile.write(path, np.concatenate([np.zeros(4000), wave, np.zeros(4000)]).astype(np.float32), 16000)
    return path


def teach_ten(root: Path, work: Path) -> None:
    for name, (text, as_) in WORDS.items():
        takes = [espeak(text, v, sp, work / f"{name}_{i}.wav") for i, (v, sp) in enumerate(TEACH_VOICES)]
        taught.teach(name, takes, None if as_ else "seed:hen", as_=as_, taught_dir=root)
    taught.teach("whistle", [whistle(work / f"whistle{i}.wav", i) for i in range(5)], "seed:chirping_birds",
                 taught_dir=root)


def stream_of(wave: np.ndarray, before: float = 3.0, after: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    sr = audio.SAMPLE_RATE
    quiet = lambda s: (10 ** (-65 / 20) * rng.standard_normal(int(s * sr))).astype(np.float32)  # noqa: E731
    return np.concatenate([quiet(before), wave, quiet(after)])


def shown_in(ear, wave: np.ndarray, hop: float = 0.25) -> list:
    """What a fresh gate (the venue defaults) shows in each window of the wave played after quiet, as the app sends
    it (a window every `hop` s), and each window's best nearest-example cosine."""
    from models.gate import GateSettings
    from offline.evaluate import gated, listen

    wins = windows(stream_of(wave), hop, flush_end=False)
    probs, tags, voiced = listen(ear, wins)
    return gated(ear, GateSettings(), probs, tags, [audio.rms_dbfs(w) for w in wins], hop * np.arange(len(wins)), voiced)


def voice() -> dict:
    import tempfile

    from models.model import load_model

    torch.set_num_threads(2)
    model = load_model()
    work = Path(tempfile.mkdtemp(prefix="teach-bench-"))
    root = work / "taught"
    teach_ten(root, work)
    ear, plain = taught.TaughtEar(model, root), taught.TaughtEar(model, work / "nothing")
    rows = {"right": 0, "wrong": 0, "nothing": 0, "untaught_shown": 0}
    for name, (text, as_) in WORDS.items():
        for i, (v, sp) in enumerate(TEST_VOICES):
            wave = audio.load_audio(espeak(text, v, sp, work / f"test_{name}_{i}.wav"))
            shown = {s for s in shown_in(ear, wave) if s is not None}
            want = as_ or name
            rows["right"] += want in shown
            rows["wrong"] += bool(shown - {want})
            rows["nothing"] += not shown
            rows["untaught_shown"] += any(s is not None for s in shown_in(plain, wave))
    talk = {"streams": 0, "streams_showing": 0, "windows": 0, "windows_showing": 0, "shown": []}
    for j, sentence in enumerate(TALK):
        for i, (v, sp) in enumerate(TEST_VOICES + TEACH_VOICES):
            shown = shown_in(ear, audio.load_audio(espeak(sentence, v, sp, work / f"talk_{j}_{i}.wav")))
            talk["streams"] += 1
            talk["windows"] += len(shown)
            talk["streams_showing"] += any(s is not None for s in shown)
            talk["windows_showing"] += sum(s is not None for s in shown)
            talk["shown"] += sorted({s for s in shown if s is not None})
    result = dict(words=len(WORDS), test_voices=len(TEST_VOICES), said=len(WORDS) * len(TEST_VOICES), **rows, talk=talk)
    print(json.dumps(result, indent=1))
    return result


def false_triggers_with_ten() -> dict:
    import tempfile

    from models.gate import GateSettings
    from models.model import load_model
    from offline.evaluate import false_triggers, noise_conditions

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="teach-bench-"))
    teach_ten(work / "taught", work)
    ear = taught.TaughtEar(load_model(), work / "taught")
    rows = false_triggers(ear, GateSettings(), noise_conditions(23.5))
    for r in rows:
        print(f"{r['condition']:<22} gate shows {r['gated_shown']:3d}/{r['windows']}  max p {r['max_prob']:.2f}  top {r['top_classes']}")
    return dict(taught=len(ear.sounds), rows=rows)


def timing(reps: int = 60) -> dict:
    import shutil
    import tempfile

    from models.model import load_model

    torch.set_num_threads(1)  # the server's share of a 2-core machine (inference_server.server.serve)
    model = load_model()
    work = Path(tempfile.mkdtemp(prefix="teach-bench-"))
    teach_ten(work / "taught", work)
    takes = [whistle(work / f"w{i}.wav", 10 + i) for i in range(5)]
    ear = taught.TaughtEar(model, work / "taught")
    teach_s, fit_s = [], []
    for k in range(5):
        t0 = time.perf_counter()
        taught.teach(f"new{k}", takes, "seed:cow", taught_dir=work / "taught")
        t1 = time.perf_counter()
        ear.refresh(force=True)
        t2 = time.perf_counter()
        assert f"new{k}" in ear.class_names
        teach_s.append(t1 - t0); fit_s.append(t2 - t1)
        taught.forget(f"new{k}", work / "taught")
        ear.refresh(force=True)
    rng = np.random.default_rng(0)
    wins = [(0.1 * rng.standard_normal(audio.N_SAMPLES)).astype(np.float32)[None] for _ in range(4)]
    base, mine = [], []
    for r in range(reps):  # interleaved, so a busy moment of the machine falls on both
        for fn, out in ((model.predict_with_tags, base), (ear.listen, mine)):
            t0 = time.perf_counter()
            fn(wins[r % 4])
            out.append(time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    result = dict(taught=len(ear.sounds), teach_s=float(np.median(teach_s)), fit_s=float(np.median(fit_s)),
                  usable_worst_s=float(np.median(teach_s) + np.median(fit_s) + taught.RECHECK_S),
                  window_ms_without=1000 * float(np.median(base)), window_ms_with=1000 * float(np.median(mine)),
                  ratio=float(np.median(mine) / np.median(base)))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["embed", "classes", "voice", "timing", "false-triggers"])
    a = p.parse_args()
    {"embed": embed_all, "classes": leave_classes_out, "voice": voice, "timing": timing,
     "false-triggers": false_triggers_with_ten}[a.what]()
