"""hear-and-see: the one command line.

Every flag of every subcommand is defined here, one section per subcommand in the order a user meets them;
each section's handler calls plain functions of the library (app.run, inference_server.server, offline.*,
models.model). Only the subcommand asked for gets its flags built: their defaults and descriptions come from
the modules that own them, which load torch, while `hear-and-see --help`, `devices` and `run` start at once
and the app process never loads torch.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.config import MODES, ConfigError, load_settings
from common.paths import DEMO_AUDIO
from offline import NUM_THREADS

# The app and the server run for days and log from many modules; training and evaluation log progress lines;
# the commands that print an answer on stdout keep stderr for warnings.
APP_LOG = dict(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
TRAINING_LOG = dict(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
ANSWER_LOG = dict(level=logging.WARNING, format="%(message)s")


class UsageError(Exception):
    """A command line that parses but asks for something that is not there: said with the subcommand's usage."""


# ----------------------------------------------------------------------------------------------------------
# run: the installation itself

def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", help="play this recording in real time instead of a microphone")
    p.add_argument("--device", help="input device index or name (see `hear-and-see devices`)")
    p.add_argument("--server", help="tcp://HOST:PORT of a running server; default: start one locally")
    p.add_argument("--server-key", help="the server's CurveZMQ public key file (from `hear-and-see keys`)")
    p.add_argument("--config", help="venue TOML file")
    p.add_argument("--mode", choices=MODES)
    p.add_argument("--headless", action="store_true", help="render offscreen (EGL) instead of a window")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--output", help="save frames, a contact sheet and the label timeline here")
    p.add_argument("--frame-log", help="write one line per displayed frame to this file")
    p.add_argument("--fullscreen", action="store_true", default=None)


def _run(args) -> int:
    from app.capture import MicrophoneError
    from app.run import run

    settings = load_settings(args.config, mode=args.mode, server=args.server or "auto", fullscreen=args.fullscreen)
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    input_file = args.input
    if input_file is None and device is None and args.headless:
        input_file = str(DEMO_AUDIO)  # no microphone is expected on a headless machine
    try:
        report = run(settings, input_file=input_file, device=device, headless=True if args.headless else None,
                     duration=args.duration, output_dir=args.output, frame_log=args.frame_log,
                     config_path=args.config, server_key=_public_key(args.server_key))
    except MicrophoneError as exc:
        print(f"hear-and-see run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    print(f"drew {report.frames_drawn} frames {report.frames_by_source}; "
          f"first image after {report.first_image_s or 0:.1f} s, first live dream frame after "
          f"{'never' if report.first_live_frame_s is None else f'{report.first_live_frame_s:.1f} s'}")
    if report.output_dir:
        print(f"saved frames, contact_sheet.png and timeline.json in {report.output_dir}")
    return 0


def _public_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    import zmq.auth
    try:
        return zmq.auth.load_certificate(path)[0]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a CurveZMQ key file ({exc}); make one with `hear-and-see keys`") from exc


# ----------------------------------------------------------------------------------------------------------
# serve: the inference server (the app starts one itself unless given --server)

def _serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", default="tcp://127.0.0.1:5555")
    p.add_argument("--config", help="venue TOML file")
    p.add_argument("--mode", choices=MODES, help="the mode's gate and dream settings (the app passes its own)")
    p.add_argument("--checkpoint", help="classifier checkpoint (default: the shipped model)")
    p.add_argument("--backbone", help="insist on this backbone (the checkpoint must match)")
    p.add_argument("--seeds", help="seed image folder (a folder per class)")
    p.add_argument("--dream-size", type=int)
    p.add_argument("--device", help="torch device: cuda, mps or cpu (default: the best there is)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores but one)")
    p.add_argument("--server-secret-key", help="CurveZMQ secret key file, needed to bind beyond loopback")


def server_settings(settings):
    """The venue's settings as the server's (GateSettings, DreamSettings)."""
    from app.config import gate_settings
    from inference_server.server import DreamSettings

    return (gate_settings(settings),
            DreamSettings(layer=settings.dream_layer, size=settings.dream_size, intensity=settings.dream_intensity,
                          blend=settings.dream_blend, aspect=settings.width / settings.height))


def _serve(args) -> int:
    from inference_server.server import serve
    from models.backbones import BackboneError
    from models.model import CheckpointError
    from models.seeds import SeedImageError

    settings = load_settings(args.config, mode=args.mode, checkpoint=args.checkpoint, backbone=args.backbone,
                             seeds_dir=args.seeds, dream_size=args.dream_size)
    secret = None
    if args.server_secret_key:
        import zmq.auth
        _, secret = zmq.auth.load_certificate(args.server_secret_key)
        if secret is None:
            raise ConfigError(f"{args.server_secret_key}: holds no secret key; use the .key_secret file")
    gate, dream = server_settings(settings)
    try:
        serve(settings.checkpoint, settings.seeds_dir, args.bind, device=args.device, backbone=settings.backbone,
              gate=gate, dream=dream, curve_secret_key=secret, threads=args.threads, taught_dir=settings.taught_dir)
    except (CheckpointError, BackboneError, SeedImageError, ValueError) as exc:
        print(f"hear-and-see serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


# ----------------------------------------------------------------------------------------------------------
# devices and keys: what setting up a venue needs

def _devices(args) -> int:
    from app.capture import list_input_devices

    found = list_input_devices()
    for d in found:
        print(f"{d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['rate']:.0f} Hz)")
    if not found:
        print("no audio input devices found")
    return 0


def _keys_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", nargs="?", default="keys")


def _keys(args) -> int:
    import zmq.auth

    directory = Path(args.directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, "server")
    print(f"server keys: {public} (give to clients) and {secret} (keep on the server)")
    return 0


# ----------------------------------------------------------------------------------------------------------
# classify: what the ear hears in files

def _classify_flags(p: argparse.ArgumentParser) -> None:
    from models.model import SHIPPED_CHECKPOINT

    p.description = "Name the sound in audio files (wav/flac/mp3/ogg, any length)."
    p.add_argument("files", nargs="+")
    p.add_argument("--checkpoint", help=f"default: {SHIPPED_CHECKPOINT}")
    p.add_argument("--json", action="store_true", help="one JSON object per file with every class's probability")
    p.add_argument("--hop", type=float, default=0.5, help="seconds between 4 s windows (default 0.5)")
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--classes", help="a class set (animals, farm, taught, ...): probabilities over it alone")
    p.add_argument("--config", help="venue TOML file: its taught sounds are heard too (taught_dir)")


def _classify(args) -> int:
    from models.model import CheckpointError
    from offline.evaluate import classify

    taught_dir = load_settings(args.config).taught_dir
    try:
        failed = classify(args.files, checkpoint=args.checkpoint, json_out=args.json, hop=args.hop, top=args.top,
                          classes=args.classes, taught_dir=taught_dir)
    except (CheckpointError, ValueError) as exc:
        print(f"hear-and-see classify: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------------------------
# teach: the venue's own sounds, each with its own picture

def _teach_flags(p: argparse.ArgumentParser) -> None:
    p.description = ("Teach the installation a sound of the venue's own: 3 to 10 examples (files, or takes from the "
                     "microphone) and a picture. A running server hears it within 2 s.")
    p.epilog = """examples:
  hear-and-see teach flute a.wav b.wav c.wav --picture flute.jpg
  hear-and-see teach moo --record 5 --as cow          # a child's moo shows the toy's cow
  hear-and-see teach bell x.wav y.wav z.wav --picture seed:church_bells
  hear-and-see teach --list | --forget NAME | --export venue.zip | --import venue.zip"""
    p.add_argument("name", nargs="?", help="the sound's name: lower-case letters, digits, '_' or '-'")
    p.add_argument("files", nargs="*", help="example recordings (wav/flac/mp3/ogg), 3 to 10")
    p.add_argument("--picture", help="JPEG, PNG or WebP file, or seed:CLASS for a bundled picture")
    p.add_argument("--as", dest="as_", metavar="BUILTIN", help="show this built-in class (and its picture) for it")
    p.add_argument("--record", type=int, metavar="N", help="take N examples from the microphone")
    p.add_argument("--device", help="input device for --record (see `hear-and-see devices`)")
    p.add_argument("--list", action="store_true", help="the taught sounds")
    p.add_argument("--forget", metavar="NAME", help="forget a taught sound")
    p.add_argument("--export", metavar="FILE.zip", help="write the taught sounds to a zip")
    p.add_argument("--import", dest="import_", metavar="FILE.zip", help="teach the sounds of a zip")
    p.add_argument("--config", help="venue TOML file (its taught_dir)")
    p.add_argument("--taught-dir", help="the folder of taught sounds (default: the venue file's taught_dir)")


def _teach(args) -> int:
    from models import taught

    asked = [bool(args.name), args.list, bool(args.forget), bool(args.export), bool(args.import_)]
    if sum(asked) != 1:
        raise UsageError("say one thing: NAME FILE..., NAME --record N, --list, --forget NAME, --export FILE.zip "
                         "or --import FILE.zip")
    if args.name and bool(args.files) == (args.record is not None):
        raise UsageError(f"teach {args.name} from example files or from --record N, not both or neither")
    root = Path(args.taught_dir or load_settings(args.config).taught_dir)
    try:
        if args.list:
            for s in taught.taught_sounds(root):
                shows = f"shows {s.as_}" if s.as_ else f"picture {s.picture}"
                print(f"{s.name:<20} {len(s.examples)} examples  {shows}  (taught {s.created})")
            print(f"({len(taught.taught_sounds(root))} taught in {root})")
        elif args.forget:
            taught.forget(args.forget, root)
            print(f"forgot {args.forget}")
        elif args.export:
            print(f"exported {', '.join(taught.export_zip(args.export, root))} to {args.export}")
        elif args.import_:
            print(f"imported {', '.join(s.name for s in taught.import_zip(args.import_, root))} into {root}")
        elif args.record is not None:
            return _teach_from_microphone(args, root)
        else:
            s = taught.teach(args.name, args.files, args.picture, args.as_, root)
            print(f"taught {s.name} ({len(s.examples)} examples{f', shows {s.as_}' if s.as_ else ''}) in {root}")
    except taught.TaughtError as exc:
        print(f"hear-and-see teach: {exc}", file=sys.stderr)
        return 2
    return 0


def _teach_from_microphone(args, root: Path) -> int:
    """Takes from the microphone in this process, which stays free of torch like the app's; a child process checks
    and stores them with the library, so a take is judged by the same rules as a file."""
    import subprocess
    import tempfile

    from app.capture import MicrophoneError
    from app.takes import TakeError, record_takes
    from models import taught

    taught.check_name(args.name, taught.builtin_classes())
    if not taught.MIN_EXAMPLES <= args.record <= taught.MAX_EXAMPLES:
        raise UsageError(f"--record {args.record}: take {taught.MIN_EXAMPLES} to {taught.MAX_EXAMPLES} examples")
    if args.picture and not args.picture.startswith(taught.SEED_PREFIX):
        taught.read_picture(args.picture)  # a bad picture is said before anyone makes a sound
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    with tempfile.TemporaryDirectory(prefix="hear-and-see-takes-") as tmp:
        try:
            takes = record_takes(args.record, Path(tmp), device, say=print,
                                 show=lambda line: print(f"\r{line}", end="", file=sys.stderr, flush=True))
        except (MicrophoneError, TakeError) as exc:
            print(f"\nhear-and-see teach: {exc}", file=sys.stderr)
            return 2
        command = [sys.executable, "-m", "app.cli", "teach", args.name, *map(str, takes), "--taught-dir", str(root)]
        command += ["--picture", args.picture] if args.picture else []
        command += ["--as", args.as_] if args.as_ else []
        return subprocess.run(command).returncode


# ----------------------------------------------------------------------------------------------------------
# prerender and seeds: the pictures the show falls back on and dreams from

def _prerender_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", help="comma-separated classes (default: every class with a seed image)")
    p.add_argument("--frames", type=int, help="frames per class (default 120)")
    p.add_argument("--size", type=int, help="the dream's short side in pixels (default: the machine's "
                   "profile, as the live server picks it)")
    p.add_argument("--seeds", help="seed image folder (default: the gallery's seed_images/)")
    p.add_argument("--out", help="output folder (default: prerendered/)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", help="local ImageNet weights file for the backbone")
    p.add_argument("--intensity", type=float, default=1.0)
    p.add_argument("--zoom-speed", type=float, default=0.5)


def _prerender(args) -> int:
    import torch

    from models import seeds
    from offline.prerender import PRERENDER_FRAMES, PRERENDER_OUT, prerender

    seed_dir = Path(args.seeds) if args.seeds else seeds.SEED_DIR
    classes = args.classes.split(",") if args.classes else seeds.seed_classes(seed_dir)
    missing = [c for c in classes if not seeds.seed_image_paths(c, seed_dir)]
    if missing:
        raise UsageError(f"no seed image for {', '.join(missing)} in {seed_dir}; "
                         f"add one, or generate one with `hear-and-see seeds generate CLASS`")
    torch.set_num_threads(min(torch.get_num_threads(), NUM_THREADS))
    out = args.out or str(PRERENDER_OUT)
    n = prerender(classes, args.frames or PRERENDER_FRAMES, args.size, out_dir=out, backbone=args.backbone,
                  weights_path=args.weights, intensity=args.intensity, zoom_speed=args.zoom_speed, seed_dir=seed_dir)
    print(f"wrote {n} frames under {out}")
    return 0


def _seeds_flags(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="seeds_command", required=True)
    sub.add_parser("collect", help="rebuild seed_images/ (gallery and toy) from the credited sources")
    generate = sub.add_parser("generate", help="generate seeds from the ImageNet head")
    generate.add_argument("classes", nargs="*", help="classes (default: every ESC-50 class without a seed image)")
    generate.add_argument("--size", type=int, default=224)


def _seeds(args) -> int:
    import torch

    from models.seeds import ESC50_TO_IMAGENET, seed_image_paths
    from offline.seed_collection import collect, generate_missing

    torch.set_num_threads(min(torch.get_num_threads(), NUM_THREADS))
    if args.seeds_command == "collect":
        paths = collect()
    else:
        classes = args.classes or [c for c in ESC50_TO_IMAGENET if not seed_image_paths(c)]
        unknown = [c for c in classes if c not in ESC50_TO_IMAGENET]
        if unknown:
            raise UsageError(f"no ImageNet class mapped for {unknown}; add them to ESC50_TO_IMAGENET")
        paths = generate_missing(classes, args.size)
    for path in paths:
        print(path)
    return 0


# ----------------------------------------------------------------------------------------------------------
# train-tagger, train and ensemble: teaching the ear

def _folds(values: list[str] | None) -> tuple[int, ...] | None:
    """--test-folds 1 2 -> (1, 2); 'none' (or 'all': train on all) -> (); not given -> None."""
    if values is None:
        return None
    if len(values) == 1 and values[0].lower() in ("none", "all", ""):
        return ()
    return tuple(int(v) for v in values)


def _train_tagger_flags(p: argparse.ArgumentParser) -> None:
    from offline import train_tagger

    p.description = train_tagger.__doc__
    p.add_argument("--test-folds", nargs="+", default=["4"], help="folds held out, or 'none' to train on all")
    p.add_argument("--out", help="checkpoint to write (a .json of its history beside it)")
    p.add_argument("--epochs", type=int, default=train_tagger.EPOCHS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe", action="store_true", help="no fine-tuning: logistic regression on the frozen embedding")
    p.add_argument("--probe-cv", action="store_true", help="cross-validate the probe over --test-folds")
    p.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                   help="override a recipe constant of offline/train_tagger.py, e.g. --set LR_NETWORK=1e-4 "
                        "START_FROM_PROBE=1")


# How `train-tagger --set` reads a recipe constant of each kind, and what it says a bad value should be.
_RECIPE_VALUES = {bool: (lambda v: bool(int(v)), "0 or 1"),
                  tuple: (lambda v: tuple(float(x) for x in v.split(",") if x), "numbers separated by commas (none: empty)")}


def _train_tagger(args) -> int:
    from models import efficientat
    from offline import train_tagger
    from offline.datasets import load_dataset
    from offline.evaluate import probe_cross_validation

    for pair in args.set:
        name, sep, value = pair.partition("=")
        if not sep or name not in train_tagger.RECIPE_FIELDS:
            raise UsageError(f"--set {name}: not one of {', '.join(train_tagger.RECIPE_FIELDS)}")
        kind = type(getattr(train_tagger, name))
        parse, takes = _RECIPE_VALUES.get(kind, (kind, f"a {kind.__name__}"))
        try:
            typed = parse(value)
        except ValueError:
            raise UsageError(f"--set {pair}: {name} takes {takes}") from None
        # The recipe is the module's constants: run() and the recipe it records in the checkpoint read them.
        setattr(train_tagger, name, typed)
    test_folds = _folds(args.test_folds)
    if args.probe_cv:
        res = probe_cross_validation(load_dataset(progress=False), test_folds, backbone=efficientat.NAME,
                                     l2=train_tagger.PROBE_L2, progress=False)
        print(json.dumps({k: v for k, v in res.items() if k != "pooled"}))
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1))
    else:
        train_tagger.run(test_folds, args.out, epochs=args.epochs, seed=args.seed, use_probe=args.probe)
    return 0


def _train_flags(p: argparse.ArgumentParser) -> None:
    from models.waveform_cnn import NAME as WAVEFORM_CNN
    from offline import train

    p.description = train.__doc__
    p.add_argument("--data", help="dataset folder (default: $HEAR_AND_SEE_ESC50 or ../shared/data/esc50)")
    p.add_argument("--layout", choices=("esc50", "urbansound8k", "folder"), help="default: detected")
    p.add_argument("--group-pattern", help="folder layout: regex naming a clip's source recording in its stem")
    p.add_argument("--test-folds", nargs="+", default=["4"], help="folds held out for testing; 'none' trains on all")
    p.add_argument("--train-folds", nargs="+", help="folds to train on (default: all the others)")
    p.add_argument("--recipe", choices=sorted(train.RECIPES), default="best")
    p.add_argument("--probe", action="store_true", help="frozen backbone + logistic regression head")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   help=f"efficientnet_lite0, resnet18/34/50, or {WAVEFORM_CNN} (raw-waveform comparison row)")
    p.add_argument("--no-pretrained", action="store_true", help="random init (tests, or no weights at hand)")
    p.add_argument("--weights-path", help="local ImageNet weights file for the backbone")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="override recipe fields, e.g. --set specaugment=false roll=0 stretch_pitch=2")
    p.add_argument("--random-split", action="store_true",
                   help="hold out as many clips as --test-folds hold, drawn at random (the leak demonstration)")
    p.add_argument("--max-per-class", type=int,
                   help="keep only the first N clips of each class in each fold (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", help="start from this trained checkpoint instead of ImageNet weights")
    p.add_argument("--out", help="checkpoint to write (e.g. models/checkpoints/esc50_efficientnet_lite0.pt)")
    p.add_argument("--metrics-json", help="also write the run's metrics and history here")
    p.add_argument("--metrics-from", help="JSON of a held-out run of the same recipe, stored in the checkpoint")
    p.add_argument("--no-progress", action="store_true")


def recipe_overrides(pairs: list[str]) -> dict:
    """--set roll=0 specaugment=false -> {"roll": 0.0, "specaugment": False}, typed by the Recipe's fields."""
    import dataclasses

    from offline.train import Recipe

    fields = {f.name: f.type for f in dataclasses.fields(Recipe)}
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        kind = fields[key]
        try:
            if kind == "bool":
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                out[key] = text.lower() in ("true", "1", "yes")
            else:
                out[key] = {"int": int, "float": float, "str": str}[kind](text)
        except ValueError:
            raise ValueError(f"--set {pair!r}: {key} takes a {kind}") from None
    return out


def _train(args) -> int:
    from offline.train import train

    extra = None
    if args.metrics_from:
        held = json.loads(Path(args.metrics_from).read_text())
        extra = dict(held_out=held.get("metrics", held))
    try:
        res = train(args.data, args.layout, test_folds=_folds(args.test_folds), train_folds=_folds(args.train_folds),
                    recipe=args.recipe, probe=args.probe, backbone=args.backbone, pretrained=not args.no_pretrained,
                    weights_path=args.weights_path, out=args.out, group_pattern=args.group_pattern,
                    max_per_class=args.max_per_class, seed=args.seed, extra_metrics=extra,
                    progress=not args.no_progress, init_from=args.init_from, random_split=args.random_split,
                    # a field given both ways takes --set's value
                    **(dict(epochs=args.epochs, batch_size=args.batch_size) | recipe_overrides(args.set)))
    except (FileNotFoundError, ValueError) as exc:
        print(f"hear-and-see train: {exc}", file=sys.stderr)
        return 2
    if args.metrics_json:
        Path(args.metrics_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.metrics_json).write_text(json.dumps(
            dict(metrics=res["metrics"], recipe=res["recipe"], history=res["history"]), indent=1))
    print(json.dumps(res["metrics"]))
    return 0


def _ensemble_flags(p: argparse.ArgumentParser) -> None:
    p.description = "One checkpoint serving the average of several."
    p.add_argument("checkpoints", nargs="+", help="trained checkpoints of one backbone and class list")
    p.add_argument("--out", required=True, help="checkpoint to write")


def _ensemble(args) -> int:
    from models.model import CheckpointError, ensemble_of, save_checkpoint

    try:
        model, metrics = ensemble_of(args.checkpoints)
    except CheckpointError as exc:
        print(f"hear-and-see ensemble: {exc}", file=sys.stderr)
        return 2
    save_checkpoint(model, args.out, recipe=dict(name="ensemble"), metrics=metrics)
    print(f"{args.out}: {len(model.members)} members of {model.backbone.name}, "
          f"{Path(args.out).stat().st_size / 1e6:.1f} MB, held-out folds {metrics['test_folds'] or 'none'}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# evaluate: how good the ear is, measured

def _evaluate_flags(p: argparse.ArgumentParser) -> None:
    from models.gate import GateSettings
    from offline import evaluate

    p.description = evaluate.__doc__
    p.add_argument("--data", help="dataset folder (default: $HEAR_AND_SEE_ESC50 or ../shared/data/esc50)")
    p.add_argument("--checkpoint", nargs="+", help="score checkpoints on their held-out folds (or --folds), pooled")
    p.add_argument("--folds", nargs="+", type=int, help="default: 1-4, or each checkpoint's own held-out folds")
    p.add_argument("--classes", help="score a class set as the app shows it (e.g. animals, the toy's): only its "
                                     "clips, outputs restricted to it")
    p.add_argument("--ensemble", action="store_true",
                   help="score --checkpoint as one model, their mean (as `hear-and-see ensemble` writes it)")
    p.add_argument("--cv", action="store_true", help="cross-validate over --folds (trains per fold)")
    p.add_argument("--leak", action="store_true", help="also run the same recipe on random clip splits")
    p.add_argument("--probe", action="store_true", help="cv/leak with the frozen linear probe (fast)")
    p.add_argument("--recipe", default="best")
    p.add_argument("--epochs", type=int)
    p.add_argument("--false-triggers", action="store_true", help="silence and noise through the model and gate")
    p.add_argument("--sounds", nargs="+", default=[],
                   help="--false-triggers: recordings with no event of the class set in them (speech, music), "
                        "added to silence and noise")
    p.add_argument("--silence-dbfs", type=float, default=GateSettings.silence_dbfs)
    p.add_argument("--min-confidence", type=float, nargs="+", default=[GateSettings.min_confidence],
                   help="--events-in-noise compares every value given; the rest use the first")
    p.add_argument("--enter-windows", type=int, nargs="+", default=[GateSettings.enter_windows],
                   help="as --min-confidence")
    p.add_argument("--hold-seconds", type=float, default=GateSettings.hold_seconds)
    p.add_argument("--floor-margin-db", type=float, default=GateSettings.floor_margin_db,
                   help="also gate windows within this many dB of the recent floor (0: off)")
    p.add_argument("--events-in-noise", action="store_true",
                   help="--folds' clips played into a steady noise bed, through the gate with and without "
                        "the room floor (--floor-margin-db, or 6): what each costs in missed events")
    p.add_argument("--bed-dbfs", type=float, default=-50.0, help="the noise bed's level for --events-in-noise")
    p.add_argument("--out-dir", default="runs/eval", help="reports, JSON and confusion-matrix PNGs go here")


def _evaluate(args) -> int:
    if not (args.false_triggers or args.events_in_noise or args.checkpoint or args.cv or args.leak):
        raise UsageError("say what to evaluate: --checkpoint, --cv, --leak or --false-triggers")
    import torch

    from models.model import CheckpointError

    torch.set_num_threads(NUM_THREADS)
    out_dir = Path(args.out_dir)
    try:
        if args.false_triggers:
            summary = _evaluate_false_triggers(args)
        elif args.events_in_noise:
            summary = _evaluate_events_in_noise(args)
        elif args.checkpoint and not args.cv:
            summary = _evaluate_checkpoints(args, out_dir)
        else:
            summary = _evaluate_cross_validation(args, out_dir)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"hear-and-see evaluate: {exc}", file=sys.stderr)
        return 2
    if summary:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print(f"summary in {out_dir / 'summary.json'}")
    return 0


def _gate(args, min_confidence: float, enter_windows: int, floor_margin_db: float):
    from models.gate import GateSettings

    return GateSettings(silence_dbfs=args.silence_dbfs, min_confidence=min_confidence, enter_windows=enter_windows,
                        hold_seconds=args.hold_seconds, floor_margin_db=floor_margin_db)


def _evaluate_false_triggers(args) -> dict:
    from dataclasses import asdict

    from models import audio
    from models.model import SHIPPED_CHECKPOINT, load_model
    from offline.evaluate import false_triggers, noise_conditions

    checkpoint = args.checkpoint[0] if args.checkpoint else None  # the gate is measured with one model
    model = load_model(checkpoint)
    gate = _gate(args, args.min_confidence[0], args.enter_windows[0], args.floor_margin_db)
    streams = {**noise_conditions(23.5), **{Path(f).name: audio.load_audio(f) for f in args.sounds}}
    rows = false_triggers(model, gate, streams)
    for r in rows:
        print(f"{r['condition']:<22} raw confident {r['raw_confident']:3d}/{r['windows']}  "
              f"gate shows {r['gated_shown']:3d}/{r['windows']}  max p {r['max_prob']:.2f}  top {r['top_classes']}")
    return dict(false_triggers=dict(gate=asdict(gate), checkpoint=str(checkpoint or SHIPPED_CHECKPOINT), rows=rows))


def _evaluate_events_in_noise(args) -> dict:
    from models.model import SHIPPED_CHECKPOINT, load_model
    from offline.datasets import load_dataset
    from offline.evaluate import ALL_FOLDS, events_in_noise

    checkpoint = args.checkpoint[0] if args.checkpoint else None
    model = load_model(checkpoint)
    ds = load_dataset(args.data, folds=args.folds or ALL_FOLDS)
    margin = args.floor_margin_db or 6.0
    gates = {f"p>={c:g}, {e} window(s), {f'floor {margin:g} dB' if floor else 'no floor'}":
             _gate(args, c, e, margin if floor else 0.0)
             for c in args.min_confidence for e in args.enter_windows for floor in (False, True)}
    res = events_in_noise(model, ds.waveforms, ds.labels, gates, bed_dbfs=args.bed_dbfs)
    res["checkpoint"], res["folds"] = str(checkpoint or SHIPPED_CHECKPOINT), list(args.folds or ALL_FOLDS)
    for name, row in res["rows"].items():
        print(f"{name:<36} " + "  ".join(f"{k} {v['count']}/{v.get('of', res['clips'])} ({v['share']:.1%})"
                                        for k, v in row.items()))
    return dict(events_in_noise=res)


def _evaluate_checkpoints(args, out_dir: Path) -> dict:
    from offline.evaluate import score_checkpoints
    from offline.metrics import report_text, write_report

    s, names, tag = score_checkpoints(args.checkpoint, args.data, args.folds, args.ensemble, args.classes)
    write_report(s, names, out_dir, tag)
    print(report_text(s))
    print(f"\nreport, JSON and confusion matrix in {out_dir}/{tag}*")
    return {}  # the report is its own summary


def _evaluate_cross_validation(args, out_dir: Path) -> dict:
    from offline.datasets import load_dataset
    from offline.evaluate import ALL_FOLDS, finetune_cross_validation, probe_cross_validation
    from offline.metrics import write_report

    summary = {}
    ds = load_dataset(args.data) if args.probe else None
    for leak in [False] + ([True] if args.leak else []):
        if args.probe:
            res = probe_cross_validation(ds, args.folds or ALL_FOLDS, leak=leak)
        else:
            res = finetune_cross_validation(args.data, args.folds or ALL_FOLDS, args.recipe, leak=leak,
                                            epochs=args.epochs)
        tag = f"{'probe' if args.probe else args.recipe}_{'random_split' if leak else 'folds'}"
        names = load_dataset(args.data).class_names if ds is None else ds.class_names
        write_report(res["pooled"], names, out_dir, tag)
        summary[tag] = {k: v for k, v in res.items() if k != "pooled"}
        print(f"{tag}: mean accuracy {res['mean_accuracy']:.4f} +- {res['std_accuracy']:.4f}, "
              f"macro-F1 {res['mean_macro_f1']:.4f}  ({res['splits']})")
    return summary


# ----------------------------------------------------------------------------------------------------------
# auralize: what the ear believes a class sounds like

def _auralize_flags(p: argparse.ArgumentParser) -> None:
    from offline.auralize import GAIN_JITTER_DB, STEPS

    p.description = "Synthesise the sound the classifier most believes is CLASS."
    p.add_argument("class_name", metavar="CLASS")
    p.add_argument("-o", "--output", required=True, help="output .wav")
    p.add_argument("--checkpoint", default=None, help="classifier checkpoint (default: the shipped one)")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--normalize", action="store_true",
                   help="peak-normalise to -1 dBFS for listening (it is made to be heard as CLASS up to "
                        f"{GAIN_JITTER_DB:g} dB louder or quieter than it is found)")


def _auralize(args) -> int:
    import numpy as np
    import soundfile

    from models import audio
    from models.model import load_model
    from offline.auralize import auralize, heard_as

    model = load_model(args.checkpoint)
    if args.class_name not in model.class_names:
        raise UsageError(f"{args.class_name!r} is not a class of this model; "
                         f"choose one of {', '.join(model.class_names)}")
    wave = auralize(model, args.class_name, args.steps, seed=args.seed)
    if args.normalize:
        wave = (wave * (0.89 / max(float(np.abs(wave).max()), 1e-9))).astype(np.float32)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(out, wave, audio.SAMPLE_RATE)
    print(f"wrote {out} ({audio.WINDOW_SECONDS:g} s, {audio.rms_dbfs(wave):.0f} dBFS rms); the classifier hears "
          f"it as {args.class_name} with p = {heard_as(model, wave, args.class_name):.2f}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# the command line

@dataclass(frozen=True)
class Command:
    name: str
    help: str                                               # its line in `hear-and-see --help`
    flags: Callable[[argparse.ArgumentParser], None]        # adds its flags to its parser
    handler: Callable[[argparse.Namespace], int]            # does it; returns the exit status
    log: dict                                               # logging.basicConfig's arguments


def _no_flags(p: argparse.ArgumentParser) -> None:
    pass


COMMANDS = [  # in the order a user meets them
    Command("run", "listen and show: the installation itself", _run_flags, _run, APP_LOG),
    Command("serve", "run the inference server", _serve_flags, _serve, APP_LOG),
    Command("devices", "list audio input devices", _no_flags, _devices, APP_LOG),
    Command("keys", "generate CurveZMQ keys for a server reachable beyond loopback", _keys_flags, _keys, APP_LOG),
    Command("classify", "name the sound in audio files", _classify_flags, _classify, ANSWER_LOG),
    Command("teach", "teach it a sound of the venue's own, with a picture", _teach_flags, _teach, ANSWER_LOG),
    Command("prerender", "render zoom-dream sequences per class for the fallback", _prerender_flags, _prerender,
            APP_LOG),
    Command("seeds", "seed images: rebuild them from their sources, or generate missing ones", _seeds_flags, _seeds,
            APP_LOG),
    Command("train-tagger", "fine-tune the AudioSet network on ESC-50 (what ships), or fit a probe on it",
            _train_tagger_flags, _train_tagger, TRAINING_LOG),
    Command("train", "train a classifier on an ImageNet backbone (the paper's path)", _train_flags, _train,
            TRAINING_LOG),
    Command("ensemble", "one checkpoint serving the average of several", _ensemble_flags, _ensemble, ANSWER_LOG),
    Command("evaluate", "score checkpoints, cross-validate, measure the gate on noise", _evaluate_flags, _evaluate,
            TRAINING_LOG),
    Command("auralize", "synthesise what the classifier believes a class sounds like", _auralize_flags, _auralize,
            ANSWER_LOG),
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand with its one-line help; the flags of `command` alone (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="hear-and-see", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log everything (debug level)")
    sub = parser.add_subparsers(dest="command", required=True)
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help, description=c.help,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        # the subcommand's own parser: a UsageError from its handler is said with its usage line
        p.set_defaults(handler=c.handler, log=c.log, parser=p)
        if c.name == command:
            c.flags(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before torch loads: OpenMP threads that spin while waiting starve everything else on a shared CPU
    # (measured: 2-thread dreams fell from ~6 to under 1 keyframe/s beside another torch job).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    command = next((a for a in argv if not a.startswith("-")), None)  # options before it take no value
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(**{**args.log, **({"level": logging.DEBUG} if args.verbose else {})})
    try:
        return args.handler(args)
    except UsageError as exc:
        args.parser.error(str(exc))
    except ConfigError as exc:
        print(f"hear-and-see: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
