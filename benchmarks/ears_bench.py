"""Does it hear what I made? The shipped ear against the one before it, in one run.

1. recordings from elsewhere: the 10 CC0 animal recordings in ../shared/data/cc0_animals, named over all 50
   ESC-50 classes, over the toy's "animals" set and (new ear only) over "farm", which reaches past ESC-50;
2. false triggers: 40 windows (hop 0.5 s) of silence, white, pink and brown noise at -60..-30 dBFS, speech
   made with espeak-ng and music made with sox, through each ear and its gate: windows that show a class;
3. held-ness: each CC0 recording looped for 60 s (a dog barking on and on): the share of windows after the
   first 4 s that show the right class, and whether it is still shown at the end;
4. ESC-50 fold 4 (with a checkpoint trained on folds 1-3, --fold4): clean, in pink room noise at 20/10/0 dB SNR,
   and with simulated reverb (exponential tail, RT60 0.3 and 0.8 s, direct-to-reverberant ratio 0 dB): clip
   accuracy.

Usage: python benchmarks/ears_bench.py --baseline OLD_CHECKPOINT [--fold4 runs/tagger_fold4.pt]
                                       [--baseline-fold4 OLD_FOLD4_CHECKPOINT] [--same-gate]
The baseline's gate is the one it shipped with (min_confidence 0.35, 2 windows in a row, room floor 6 dB), or with
--same-gate today's, to compare two ears.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import audio  # noqa: E402
from models.classes import class_set_probabilities, resolve_class_set  # noqa: E402
from models.gate import GateSettings  # noqa: E402
from models.model import SHIPPED_CHECKPOINT, hear, load_model  # noqa: E402
from offline.datasets import load_dataset, windows  # noqa: E402
from offline.evaluate import false_triggers, gated, noise, noise_conditions  # noqa: E402
from offline.train import clip_probabilities  # noqa: E402

SHARED = ROOT.parent / "shared"
CC0 = SHARED / "data" / "cc0_animals"
ESC_NAMES = {"cat": "cat", "cow": "cow", "dog": "dog", "frog": "frog", "pig": "pig", "rooster": "rooster",
             "sheep": "sheep", "horse": "horse", "duck": "duck", "owl": "owl"}
OLD_GATE = GateSettings(silence_dbfs=-55.0, min_confidence=0.35, enter_windows=2, hold_seconds=2.0,
                        floor_margin_db=6.0)


def spoken_and_played(folder: Path) -> dict[str, np.ndarray]:
    """Speech (two espeak-ng voices) and music (a sox arpeggio and chords), at 16 kHz; what is missing is skipped."""
    made = {}
    lines = {"speech (espeak-ng, male)": ["-v", "en", "Hello, welcome to the gallery. Please make the sound of an "
                                          "animal and see what appears on the screen in front of you."],
             "speech (espeak-ng, female)": ["-v", "en+f3", "Look, the dog is on the big screen. Can we go and get "
                                            "some ice cream after this? I want to see the cow again."]}
    if shutil.which("espeak-ng"):
        for name, args in lines.items():
            wav = folder / f"{len(made)}.wav"
            subprocess.run(["espeak-ng", *args[:-1], "-w", str(wav), args[-1]], check=True)
            made[name] = audio.load_audio(wav)
    if shutil.which("sox"):
        wav = folder / "music.wav"
        notes = [part for n in ("C4", "E4", "G4", "C5", "G4", "E4", "C4", "D4") * 3
                 for part in ("synth", "0.4", "pluck", n, ":")][:-1]
        subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(wav), *notes], check=True)
        made["music (sox plucked arpeggio)"] = audio.load_audio(wav)
        wav = folder / "chords.wav"
        subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(wav), "synth", "12", "sine", "220", "sine", "277",
                        "sine", "330", "remix", "-", "tremolo", "3", "40", "gain", "-12"], check=True)
        made["music (sox chord with tremolo)"] = audio.load_audio(wav)
    return made


def recordings_from_elsewhere(model, sets: list[str]) -> dict:
    tags = list(getattr(model, "tag_names", None) or ())
    rows = {}
    for path in sorted(CC0.glob("*.mp3")):
        truth = ESC_NAMES[path.stem]
        wins = windows(audio.load_audio(path))
        probs, t = hear(model, wins)
        row = {}
        for name in sets:
            subset = resolve_class_set(name, model.class_names, tags) or model.class_names
            p = class_set_probabilities(probs.mean(0), model.class_names, subset,
                                        None if t is None else t.mean(0), tags)
            row[name] = subset[int(p.argmax())]
        rows[path.stem] = dict(truth=truth, **row)
    hits = {name: sum(r[name] == r["truth"] for r in rows.values()) for name in sets}
    reachable = {name: sum(r["truth"] in (resolve_class_set(name, model.class_names, tags) or model.class_names)
                           for r in rows.values()) for name in sets}
    return dict(rows=rows, hits=hits, reachable=reachable)


def held(model, gate: GateSettings, seconds: float = 60.0, hop: float = 0.5) -> dict:
    rows = {}
    for path in sorted(CC0.glob("*.mp3")):
        truth = ESC_NAMES[path.stem]
        if truth not in model.class_names:
            continue
        wave = audio.load_audio(path)
        stream = np.resize(wave, int(seconds * audio.SAMPLE_RATE))
        wins = windows(stream, hop, flush_end=False)
        shown = gated(model, gate, *hear(model, wins), [audio.rms_dbfs(w) for w in wins], hop * np.arange(len(wins)))
        after = shown[int(4 / hop):]
        rows[path.stem] = dict(right_share=round(sum(s == truth for s in after) / len(after), 3),
                               shown_at_end=shown[-1])
    return rows


def reverb(wave: np.ndarray, rt60: float, rng: np.random.Generator, drr_db: float = 0.0) -> np.ndarray:
    """A room: the direct sound, then an exponentially decaying noise tail (-60 dB at `rt60`) carrying as much
    energy as the direct sound at `drr_db` 0 (a visitor a couple of metres from the microphone)."""
    n = int(rt60 * audio.SAMPLE_RATE)
    tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    tail[0] = 0.0
    ir = tail / np.sqrt(np.sum(tail ** 2)) * 10 ** (-drr_db / 20)
    ir[0] = 1.0
    wet = np.convolve(wave, ir)[:len(wave)]
    return (wet * np.sqrt(np.mean(wave ** 2)) / max(np.sqrt(np.mean(wet ** 2)), 1e-9)).astype(np.float32)


def degraded_esc50(model) -> dict:
    ds = load_dataset(folds=[4], progress=False)
    rng = np.random.default_rng(0)
    conditions = {"clean": list(ds.waveforms)}
    for snr in (20, 10, 0):
        conditions[f"pink room noise, SNR {snr} dB"] = [
            w + noise("pink", len(w), audio.rms_dbfs(w) - snr, rng) for w in ds.waveforms]
    for rt60 in (0.3, 0.8):
        conditions[f"reverb RT60 {rt60} s"] = [reverb(w, rt60, rng) for w in ds.waveforms]
    return {name: float((clip_probabilities(model, waves).argmax(1) == ds.labels).mean())
            for name, waves in conditions.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--baseline", required=True, help="the checkpoint shipped before (the Lite0 ensemble, say)")
    p.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    p.add_argument("--fold4", help="the shipped recipe trained on folds 1-3, for the ESC-50 conditions")
    p.add_argument("--baseline-fold4", help="the baseline's recipe trained on folds 1-3, beside --fold4")
    p.add_argument("--same-gate", action="store_true", help="the baseline behind today's gate: two ears, one gate")
    p.add_argument("--out", default="runs/ears_bench.json")
    args = p.parse_args()
    import torch
    torch.set_num_threads(2)
    ears = {"baseline": (load_model(args.baseline), GateSettings() if args.same_gate else OLD_GATE),
            "new": (load_model(args.checkpoint), GateSettings())}
    result = dict(date=time.strftime("%Y-%m-%d %H:%M"), machine=f"{platform.machine()}, 2 cores, CPU",
                  checkpoints=dict(baseline=args.baseline, new=args.checkpoint))
    with tempfile.TemporaryDirectory() as tmp:
        streams = {**noise_conditions(23.5), **spoken_and_played(Path(tmp))}
    for name, (model, gate) in ears.items():
        sets = ["all", "animals"] + (["farm"] if getattr(model, "tag_names", None) else [])
        r = result[name] = dict(gate=gate.__dict__, elsewhere=recordings_from_elsewhere(model, sets))
        print(f"{name}: CC0 recordings named right " + ", ".join(
            f"{s} {r['elsewhere']['hits'][s]}/{r['elsewhere']['reachable'][s]}" for s in sets), flush=True)
        r["false_triggers"] = false_triggers(model, gate, streams)
        for row in r["false_triggers"]:
            print(f"  {row['condition']:<34} shown {row['gated_shown']:2d}/{row['windows']}  "
                  f"(ungated confident {row['raw_confident']:2d})  top {row['top_classes'][:2]}", flush=True)
        r["held"] = held(model, gate)
        print("  looped 60 s, right after 4 s: " + ", ".join(
            f"{k} {v['right_share']:.0%}{'' if v['shown_at_end'] else ' (gone at the end)'}"
            for k, v in r["held"].items()), flush=True)
    for name, fold4 in (("esc50_fold4", args.fold4), ("baseline_esc50_fold4", args.baseline_fold4)):
        if fold4:
            result[name] = degraded_esc50(load_model(fold4))
            print(f"{name} (trained on 1-3):", result[name], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
