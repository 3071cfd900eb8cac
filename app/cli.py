"""hear-and-see: the one command line.

One parser; one small function per command, which turns its arguments into one call of the library (app.run,
inference_server.server, offline.*). Every flag has a type that checks it where it enters (the venue file's
rules, app.config.RULES, serve the flags that set the same things), and every error a user can put right
(common.errors.UserError, or a file the system refuses) is said here, in one line, with exit status 2, before
anything starts. Only the command asked for gets its flags built: their defaults and descriptions come from the
modules that own them, which load torch, while `hear-and-see --help`, `devices` and `run` start at once and the
app process never loads torch.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.config import ADDRESS, MODES, RULES, SERVER_ADDRESS, Rule, Settings, integer, load_settings, number, path
from common.errors import UserError
from common.paths import DEMO_AUDIO

# The app and the server run for days and log from many modules; training and evaluation log progress lines;
# the commands that print an answer on stdout keep stderr for warnings.
APP_LOG = dict(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
TRAINING_LOG = dict(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
ANSWER_LOG = dict(level=logging.WARNING, format="%(message)s")


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong command line is one line (what is wrong, and where to look), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def flag(rule: Rule) -> Callable[[str], object]:
    """A flag's type from a rule: the text as it is (a path, an address), else read as a number."""
    def parse(text: str):
        for value in (text, *_numbers(text)):
            try:
                return rule(value)
            except ValueError:
                pass
        raise argparse.ArgumentTypeError(f"got {text!r}, takes {_takes(rule, text)}")
    parse.__name__ = rule.takes  # argparse names a type by it in some messages
    return parse


def _numbers(text: str) -> list:
    try:
        return [int(text)]
    except ValueError:
        pass
    try:
        return [float(text)]
    except ValueError:
        return []


def _takes(rule: Rule, text: str) -> str:
    try:
        rule(text)
    except ValueError as exc:
        return str(exc)
    return rule.takes


FILE, FOLDER, FILE_OR_FOLDER = path("file"), path("folder"), path("file or folder")
POSITIVE_SECONDS = number(0.0, 10 ** 7, above_low=True)
HOP = number(0.05, 4.0)


def _fold(value):
    if value in ("none", "all"):
        return value
    return integer(1, 5)(int(value))


FOLD = Rule(_fold, "a fold number 1..5, or 'none' (train on all)")


def _folds(values: list | None) -> tuple[int, ...] | None:
    """--test-folds 1 2 -> (1, 2); 'none' (or 'all': train on all) -> (); not given -> None."""
    if values is None:
        return None
    if any(v in ("none", "all") for v in values):
        if len(values) > 1:
            raise UserError(f"--test-folds {' '.join(map(str, values))}: 'none' stands alone, or give fold numbers")
        return ()
    return tuple(values)


def _class_names(text: str) -> list[str] | str:
    """A class set's name, or class names separated by commas."""
    return RULES["classes"](text if "," not in text and text in (*_set_names(), "all", "taught") else text.split(","))


def _set_names() -> tuple[str, ...]:
    from models.classes import CLASS_SETS

    return tuple(CLASS_SETS)


CLASSES = Rule(_class_names, RULES["classes"].takes.replace("a list of", "comma-separated"))


# ----------------------------------------------------------------------------------------------------------
# run: the installation itself

def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", type=flag(FILE_OR_FOLDER),
                   help="play this recording (or a folder of them) in real time instead of a microphone")
    p.add_argument("--device", help="input device index or name (see `hear-and-see devices`)")
    p.add_argument("--server", type=flag(SERVER_ADDRESS), nargs="+", metavar="tcp://HOST:PORT|mdns",
                   help="running servers, one or several: the least loaded that answers hears this kiosk, another "
                        "takes over if it is lost; 'mdns': also those that `serve --advertise` on the local network "
                        "(default: the venue's, else start one on this machine)")
    p.add_argument("--server-key", type=flag(FILE), help="the servers' CurveZMQ public key file (`hear-and-see keys`)")
    p.add_argument("--kiosk-key", type=flag(FILE),
                   help="this kiosk's CurveZMQ secret key file (`hear-and-see keys --kiosks N`), for servers that "
                        "admit only the venue's kiosks")
    p.add_argument("--config", type=flag(FILE), help="venue TOML file (app/config.py lists its settings)")
    p.add_argument("--mode", choices=MODES, help="what the show is for; each sets its own defaults")
    p.add_argument("--headless", action="store_true", help="render offscreen (EGL) instead of a window")
    p.add_argument("--duration", type=flag(POSITIVE_SECONDS), help="stop after this many seconds")
    p.add_argument("--output", help="save frames, a contact sheet and the label timeline in this folder")
    p.add_argument("--frame-log", help="write one line per displayed frame to this file")
    p.add_argument("--fullscreen", action="store_true", default=None, help="fill the screen")


def _run(args) -> int:
    from app.run import run

    settings = load_settings(args.config, mode=args.mode, servers=args.server, fullscreen=args.fullscreen,
                             server_key=args.server_key, kiosk_key=args.kiosk_key)
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    input_file = args.input
    if input_file is None and device is None and args.headless:
        input_file = str(DEMO_AUDIO)  # no microphone is expected on a headless machine
    try:
        report = run(settings, input_file=input_file, device=device, headless=True if args.headless else None,
                     duration=args.duration, output_dir=args.output, frame_log=args.frame_log,
                     config_path=args.config, server_key=_public_key(settings.server_key),
                     kiosk_key=_kiosk_key(settings.kiosk_key))
    except KeyboardInterrupt:
        return 0
    print(report.summary())
    return 0


def _kiosk_key(path: str | None) -> tuple[bytes, bytes] | None:
    if path is None:
        return None
    return _public_key(path), _secret_key(path)


def _public_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    import zmq.auth
    try:
        return zmq.auth.load_certificate(path)[0]
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a CurveZMQ key file ({exc}); make one with `hear-and-see keys`") from exc


# ----------------------------------------------------------------------------------------------------------
# serve: the inference server (the app starts one itself unless given --server)

def _serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", type=flag(ADDRESS), help=f"where to listen (default: the venue file's bind, else "
                                                       f"{Settings.bind})")
    p.add_argument("--config", type=flag(FILE), help="venue TOML file")
    p.add_argument("--mode", choices=MODES, help="the mode's gate and dream settings (the app passes its own)")
    p.add_argument("--checkpoint", type=flag(FILE), help="classifier checkpoint (default: the shipped model)")
    p.add_argument("--backbone", help="insist on this backbone (the checkpoint must match)")
    p.add_argument("--seeds", type=flag(FOLDER), help="seed image folder (a folder per class)")
    p.add_argument("--dream-size", type=flag(RULES["dream_size"]), help="the dream's short side in pixels")
    p.add_argument("--device", type=flag(Rule(_torch_device, "cuda, cuda:N, mps or cpu")),
                   help="torch device (default: the best there is)")
    p.add_argument("--threads", type=flag(integer(1, 256)), help="torch CPU threads (default: all cores but one)")
    p.add_argument("--server-secret-key", type=flag(FILE),
                   help="CurveZMQ secret key file (`hear-and-see keys`), needed to bind beyond loopback")
    p.add_argument("--kiosk-keys", type=flag(FOLDER),
                   help="admit only kiosks whose public key is in this folder (`hear-and-see keys --kiosks N`)")
    p.add_argument("--advertise", action="store_true", default=None,
                   help="announce this server on the local network (DNS-SD, _hear-and-see._tcp), with its key's "
                        "fingerprint: kiosks with servers = [\"mdns\"] find it")


def _torch_device(value) -> str:
    kind, _, index = value.partition(":")
    if kind not in ("cuda", "mps", "cpu") or (index and not (kind == "cuda" and index.isdigit())):
        raise ValueError
    return value


def _serve(args) -> int:
    from app.config import dream_settings, gate_settings
    from inference_server.server import serve

    settings = load_settings(args.config, mode=args.mode, bind=args.bind, checkpoint=args.checkpoint,
                             backbone=args.backbone, seeds_dir=args.seeds, dream_size=args.dream_size,
                             kiosk_keys=args.kiosk_keys, advertise=args.advertise)
    # systemctl stop (SIGTERM) ends the server as Ctrl-C does, through its `finally`s: an advertised server says
    # goodbye on the network, so kiosks drop it at once rather than when its record expires.
    terminate = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve(settings.checkpoint, settings.seeds_dir, settings.bind, device=args.device, backbone=settings.backbone,
              gate=gate_settings(settings), dream=dream_settings(settings),
              curve_secret_key=_secret_key(args.server_secret_key), threads=args.threads,
              kiosk_keys=settings.kiosk_keys, taught_dir=settings.taught_dir, advertise=settings.advertise,
              hear_batch=settings.hear_batch)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, terminate)
    return 0


def _secret_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    import zmq.auth
    try:
        secret = zmq.auth.load_certificate(path)[1]
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a CurveZMQ key file ({exc}); make one with `hear-and-see keys`") from exc
    if secret is None:
        raise UserError(f"{path}: holds no secret key; use the .key_secret file")
    return secret


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
    p.add_argument("directory", nargs="?", default="keys", help="where to write server.key and server.key_secret")
    p.add_argument("--kiosks", type=flag(integer(1, 999)),
                   help="also make this many kiosk keys: kiosks/kiosk-N.key (public: the folder every server's "
                        "--kiosk-keys admits) and kiosk_secrets/kiosk-N.key_secret (one per kiosk's --kiosk-key)")


def _keys(args) -> int:
    import zmq.auth

    directory = Path(args.directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory}: not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "server.key_secret").exists():  # more kiosks later must not change the servers' key
        public, secret = zmq.auth.create_certificates(directory, "server")
        print(f"server keys: {public} (give to kiosks) and {secret} (keep on the servers)")
    for n in range(1, (args.kiosks or 0) + 1):
        name = f"kiosk-{n}"
        if (directory / "kiosks" / f"{name}.key").exists():
            continue
        # The public half goes in the folder servers admit, the secret half apart: that folder is copied to servers.
        for folder in ("kiosks", "kiosk_secrets"):
            (directory / folder).mkdir(exist_ok=True)
        public, secret = zmq.auth.create_certificates(directory / "kiosks", name)
        secret = Path(secret).rename(directory / "kiosk_secrets" / Path(secret).name)
        print(f"kiosk keys: {public} (on every server) and {secret} (on that kiosk)")
    return 0


def _console_password_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=flag(Rule(_venue_file, "a venue file in an existing folder")),
                   help="the venue TOML file to store the password's hash in (made if missing)")


def _venue_file(value) -> str:
    if not isinstance(value, str) or not Path(value).expanduser().parent.is_dir():  # a folder: the OS says so
        raise ValueError
    return str(Path(value).expanduser())


def _console_password(args) -> int:
    from getpass import getpass

    from app.config import save_setting
    from app.passwords import hash_password

    password = getpass("console password: ")
    if getpass("the same again: ") != password:
        raise UserError("the two passwords differ; nothing was changed")
    try:
        hashed = hash_password(password)
    except ValueError as exc:
        raise UserError(f"{exc}; nothing was changed") from None
    save_setting(args.config, "console_password_hash", hashed)
    print(f"the console's password is set in {args.config}; the console now answers beyond this machine "
          f"(console_host) with it")
    return 0


# ----------------------------------------------------------------------------------------------------------
# classify: what the ear hears in files

def _classify_flags(p: argparse.ArgumentParser) -> None:
    from models.model import SHIPPED_CHECKPOINT

    p.add_argument("files", nargs="+", type=flag(FILE), help="audio files (wav, flac, mp3, ogg; any length)")
    p.add_argument("--checkpoint", type=flag(FILE), help=f"default: {SHIPPED_CHECKPOINT.name}, the shipped model")
    p.add_argument("--json", action="store_true", help="one JSON object per file with every class's probability")
    p.add_argument("--hop", type=flag(HOP), default=0.5, help="seconds between 4 s windows (default 0.5)")
    p.add_argument("--top", type=flag(integer(1, 1000)), default=3, help="classes to print per file (default 3)")
    p.add_argument("--classes", type=flag(CLASSES), help="a class set (animals, farm, taught, ...) or comma-separated "
                                                         "classes: probabilities over them alone")
    p.add_argument("--config", type=flag(FILE), help="venue TOML file: its taught sounds (taught_dir) are heard too")


def _classify(args) -> int:
    from offline.evaluate import classify

    failed = classify(args.files, checkpoint=args.checkpoint, json_out=args.json, hop=args.hop, top=args.top,
                      classes=args.classes, taught_dir=load_settings(args.config).taught_dir)
    return 2 if failed else 0


# ----------------------------------------------------------------------------------------------------------
# teach: the venue's own sounds, each with its own picture

def _teach_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="the sound's name: lower-case letters, digits, '_' or '-'")
    p.add_argument("files", nargs="*", type=flag(FILE), help="3 to 10 example recordings (wav, flac, mp3, ogg)")
    p.add_argument("--picture", help="its picture: a JPEG, PNG or WebP file, or seed:CLASS for a bundled one")
    p.add_argument("--as", dest="as_", metavar="BUILTIN", help="show this built-in class (and its picture) for it")
    p.add_argument("--record", type=flag(integer(3, 10)), metavar="N", help="take N examples from the microphone")
    p.add_argument("--device", help="input device for --record (see `hear-and-see devices`)")
    p.add_argument("--list", action="store_true", help="list the taught sounds")
    p.add_argument("--forget", metavar="NAME", help="forget a taught sound")
    p.add_argument("--export", metavar="FILE.zip", help="write the taught sounds to a zip")
    p.add_argument("--import", dest="import_", type=flag(FILE), metavar="FILE.zip", help="teach the sounds of a zip")
    p.add_argument("--config", type=flag(FILE), help="venue TOML file (its taught_dir)")
    p.add_argument("--taught-dir", type=flag(RULES["taught_dir"]), help="the taught sounds' folder (default: the "
                                                                         "venue file's taught_dir)")


def _teach(args) -> int:
    from models import taught

    if sum([bool(args.name), args.list, bool(args.forget), bool(args.export), bool(args.import_)]) != 1:
        raise UserError("say one thing: NAME FILE..., NAME --record N, --list, --forget NAME, --export FILE.zip "
                        "or --import FILE.zip")
    if args.name and bool(args.files) == (args.record is not None):
        raise UserError(f"teach {args.name} from example files or from --record N, not both or neither")
    root = Path(args.taught_dir or load_settings(args.config).taught_dir)
    if args.list:
        sounds = taught.taught_sounds(root)
        for s in sounds:
            print(f"{s.name:<20} {len(s.examples)} examples  {f'shows {s.as_}' if s.as_ else f'picture {s.picture}'}"
                  f"  (taught {s.created})")
        print(f"({len(sounds)} taught in {root})")
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
    return 0


def _teach_from_microphone(args, root: Path) -> int:
    """Takes from the microphone in this process, which stays free of torch like the app's; a child process checks
    and stores them with the library, so a take is judged by the same rules as a file."""
    import tempfile

    from app.takes import record_takes, teach_in_child
    from models import taught

    taught.check_name(args.name, taught.builtin_classes())
    if args.picture and not args.picture.startswith(taught.SEED_PREFIX):
        taught.read_picture(args.picture)  # a bad picture is said before anyone makes a sound
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    with tempfile.TemporaryDirectory(prefix="hear-and-see-takes-") as tmp:
        takes = record_takes(args.record, Path(tmp), device, say=print,
                             show=lambda line: print(f"\r{line}", end="", file=sys.stderr, flush=True))
        print(teach_in_child(args.name, takes, args.picture, args.as_, root))
    return 0


# ----------------------------------------------------------------------------------------------------------
# prerender and seeds: the pictures the show falls back on and dreams from

def _prerender_flags(p: argparse.ArgumentParser) -> None:
    from models.backbones import DREAM_LAYERS
    from offline.prerender import PRERENDER_FRAMES

    p.add_argument("--classes", type=lambda text: text.split(","),
                   help="comma-separated classes (default: every class with a seed image)")
    p.add_argument("--frames", type=flag(integer(1, 100_000)), default=PRERENDER_FRAMES,
                   help=f"frames per class (default {PRERENDER_FRAMES})")
    p.add_argument("--size", type=flag(integer(64, 2160)),
                   help="the dream's short side in pixels (default: the machine's profile, as the live server picks it)")
    p.add_argument("--seeds", type=flag(FOLDER), help="seed image folder (default: the gallery's seed_images/)")
    p.add_argument("--out", help="output folder (default: prerendered/, where the fallback looks)")
    p.add_argument("--backbone", choices=sorted(DREAM_LAYERS), default="efficientnet_lite0",
                   help="the ImageNet network to dream with")
    p.add_argument("--weights", type=flag(FILE), help="local ImageNet weights file for the backbone")
    p.add_argument("--intensity", type=flag(number(0.0, 1.0)), default=1.0, help="the dream's strength, 0..1")
    p.add_argument("--zoom-speed", type=flag(number(0.0, 1.0)), default=0.5, help="how fast the zoom travels, 0..1")


def _prerender(args) -> int:
    from common.paths import PRERENDERED
    from models.seeds import SEED_DIR
    from offline.prerender import prerender

    out = args.out or str(PRERENDERED)
    n = prerender(args.classes, args.frames, args.size, out_dir=out, backbone=args.backbone, weights_path=args.weights,
                  intensity=args.intensity, zoom_speed=args.zoom_speed, seed_dir=args.seeds or SEED_DIR)
    print(f"wrote {n} frames under {out}")
    return 0


def _seeds_flags(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="seeds_command", metavar="collect|generate", required=True, parser_class=Parser)
    sub.add_parser("collect", help="rebuild seed_images/ (gallery and toy) from the credited sources")
    generate = sub.add_parser("generate", help="generate seeds from the ImageNet head")
    generate.add_argument("classes", nargs="*", help="classes (default: every ESC-50 class without a seed image)")
    generate.add_argument("--size", type=flag(integer(64, 1024)), default=224, help="pixels (default 224)")


def _seeds(args) -> int:
    from common.paths import CHECKOUT
    from offline.seed_collection import collect, generate_missing

    if not CHECKOUT:
        raise UserError("seed images are curated in a checkout of the project, not an installed package")

    paths = collect() if args.seeds_command == "collect" else generate_missing(args.classes, args.size)
    for path in paths:
        print(path)
    return 0


# ----------------------------------------------------------------------------------------------------------
# train-tagger, train and ensemble: teaching the ear

def _recipe_flag(p: argparse.ArgumentParser, recipe) -> None:
    from dataclasses import fields

    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="change the recipe: FIELD=VALUE, FIELD one of " + ", ".join(f.name for f in fields(recipe)))


def _train_tagger_flags(p: argparse.ArgumentParser) -> None:
    from offline import train_tagger

    p.description = train_tagger.__doc__
    p.add_argument("--test-folds", nargs="+", type=flag(FOLD), default=[4],
                   help="folds held out (default 4), or 'none' to train on all")
    p.add_argument("--out", help="checkpoint to write (a .json of its history beside it)")
    p.add_argument("--epochs", type=flag(integer(1, 10_000)), help="as --set epochs=N")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--probe", action="store_true", help="no fine-tuning: logistic regression on the frozen embedding")
    p.add_argument("--probe-cv", action="store_true", help="cross-validate the probe over --test-folds")
    _recipe_flag(p, train_tagger.TaggerRecipe)


def _train_tagger(args) -> int:
    from offline import train_tagger
    from offline.recipe import with_overrides

    recipe = with_overrides(train_tagger.TaggerRecipe(), ([f"epochs={args.epochs}"] if args.epochs else []) + args.set)
    if args.probe_cv:
        train_tagger.probe_cross_validation(_folds(args.test_folds), recipe, args.out)
    else:
        train_tagger.run(_folds(args.test_folds), args.out, recipe, seed=args.seed, use_probe=args.probe)
    return 0


def _train_flags(p: argparse.ArgumentParser) -> None:
    from models.backbones import BACKBONES
    from models.waveform_cnn import NAME as WAVEFORM_CNN
    from offline import train

    p.description = train.__doc__
    p.add_argument("--data", type=flag(FOLDER), help="dataset folder (default: $HEAR_AND_SEE_ESC50 or ../shared)")
    p.add_argument("--layout", choices=("esc50", "urbansound8k", "folder"), help="default: detected")
    p.add_argument("--group-pattern", help="folder layout: regex naming a clip's source recording in its stem")
    p.add_argument("--test-folds", nargs="+", type=flag(FOLD), default=[4],
                   help="folds held out for testing (default 4); 'none' trains on all")
    p.add_argument("--train-folds", nargs="+", type=flag(FOLD), help="folds to train on (default: all the others)")
    p.add_argument("--recipe", choices=sorted(train.RECIPES), default="best", help="the starting recipe")
    p.add_argument("--probe", action="store_true", help="frozen backbone + logistic regression head")
    p.add_argument("--backbone", choices=(*BACKBONES, WAVEFORM_CNN), default="efficientnet_lite0",
                   help=f"an ImageNet backbone, or {WAVEFORM_CNN} (the raw-waveform comparison row)")
    p.add_argument("--no-pretrained", action="store_true", help="random init (tests, or no weights at hand)")
    p.add_argument("--weights-path", type=flag(FILE), help="local ImageNet weights file for the backbone")
    p.add_argument("--epochs", type=flag(integer(1, 10_000)), help="as --set epochs=N")
    p.add_argument("--batch-size", type=flag(integer(1, 4096)), help="as --set batch_size=N")
    _recipe_flag(p, train.Recipe)
    p.add_argument("--random-split", action="store_true",
                   help="hold out as many clips as --test-folds hold, drawn at random (the leak demonstration)")
    p.add_argument("--max-per-class", type=flag(integer(1, 100_000)),
                   help="keep only the first N clips of each class in each fold (quick runs)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--init-from", type=flag(FILE), help="start from this trained checkpoint instead of ImageNet weights")
    p.add_argument("--out", help="checkpoint to write (e.g. models/checkpoints/esc50_efficientnet_lite0.pt)")
    p.add_argument("--metrics-json", help="also write the run's metrics and history here")
    p.add_argument("--metrics-from", type=flag(FILE), help="JSON of a held-out run of the same recipe, kept in the checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train(args) -> int:
    from offline.recipe import with_overrides
    from offline.train import RECIPES, train

    sizes = [f"{k}={v}" for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size)) if v]
    train(args.data, args.layout, test_folds=_folds(args.test_folds), train_folds=_folds(args.train_folds),
          recipe=with_overrides(RECIPES[args.recipe], sizes + args.set), recipe_name=args.recipe, probe=args.probe,
          backbone=args.backbone, pretrained=not args.no_pretrained, weights_path=args.weights_path, out=args.out,
          group_pattern=args.group_pattern, max_per_class=args.max_per_class, seed=args.seed,
          metrics_from=args.metrics_from, metrics_json=args.metrics_json, progress=not args.no_progress,
          init_from=args.init_from, random_split=args.random_split)
    return 0


def _ensemble_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", type=flag(FILE), help="trained checkpoints of one backbone and class list")
    p.add_argument("--out", required=True, help="checkpoint to write")


def _ensemble(args) -> int:
    from offline.train import write_ensemble

    print(write_ensemble(args.checkpoints, args.out))
    return 0


# ----------------------------------------------------------------------------------------------------------
# evaluate: how good the ear is, measured

def _evaluate_flags(p: argparse.ArgumentParser) -> None:
    from offline import evaluate, train

    p.description = evaluate.__doc__
    sub = p.add_subparsers(dest="evaluate_command", metavar="checkpoints|cv|false-triggers|events-in-noise",
                           required=True, parser_class=Parser)

    def common(q, checkpoint: str | None = "the shipped model"):
        q.formatter_class = argparse.RawDescriptionHelpFormatter
        if checkpoint:
            q.add_argument("--checkpoint", type=flag(FILE), help=f"the model to measure (default: {checkpoint})")
        q.add_argument("--data", type=flag(FOLDER), help="dataset folder (default: $HEAR_AND_SEE_ESC50 or ../shared)")
        q.add_argument("--out-dir", default="runs/eval", help="reports, JSON and confusion PNGs (default runs/eval)")

    q = sub.add_parser("checkpoints", help="score checkpoints on their held-out folds, pooled")
    q.add_argument("checkpoint", nargs="+", type=flag(FILE), help="trained checkpoints")
    q.add_argument("--folds", nargs="+", type=flag(FOLD), help="default: each checkpoint's own held-out folds")
    q.add_argument("--classes", type=flag(CLASSES), help="score a class set as the app shows it (e.g. animals, the "
                                                         "toy's): only its clips, outputs restricted to it")
    q.add_argument("--ensemble", action="store_true", help="score the checkpoints as one model, their mean")
    common(q, checkpoint=None)

    q = sub.add_parser("cv", help="cross-validate a recipe over folds (trains per fold)")
    q.add_argument("--folds", nargs="+", type=flag(FOLD), help="default 1 2 3 4")
    q.add_argument("--probe", action="store_true", help="the frozen linear probe (minutes) instead of fine-tuning")
    q.add_argument("--leak", action="store_true", help="also the same recipe on random clip splits")
    q.add_argument("--recipe", choices=sorted(train.RECIPES), default="best", help="fine-tuning recipe")
    q.add_argument("--epochs", type=flag(integer(1, 10_000)), help="fine-tuning epochs")
    common(q, checkpoint=None)

    q = sub.add_parser("false-triggers", help="silence, noise and other sounds through the model and gate")
    q.add_argument("--sounds", nargs="+", type=flag(FILE), default=[],
                   help="recordings with no event of the class set in them (speech, music), added to silence and noise")
    _gate_flags(q, several=False)
    common(q)

    q = sub.add_parser("events-in-noise", help="clips played into a steady noise bed, through the gate")
    q.add_argument("--folds", nargs="+", type=flag(FOLD), help="default 1 2 3 4")
    q.add_argument("--bed-dbfs", type=flag(number(-120.0, 0.0)), default=-50.0, help="the noise bed's level")
    _gate_flags(q, several=True)
    common(q)


def _gate_flags(q: argparse.ArgumentParser, several: bool) -> None:
    from models.gate import GateSettings

    d = GateSettings()
    many = dict(nargs="+") if several else {}
    q.add_argument("--silence-dbfs", type=flag(RULES["silence_dbfs"]), default=d.silence_dbfs,
                   help=f"windows quieter than this are silence (default {d.silence_dbfs:g})")
    q.add_argument("--min-confidence", type=flag(RULES["min_confidence"]), default=[d.min_confidence] if several
                   else d.min_confidence, help="the gate's confidence" + (" (each value compared)" if several else ""),
                   **many)
    q.add_argument("--enter-windows", type=flag(RULES["enter_windows"]), default=[d.enter_windows] if several
                   else d.enter_windows, help="windows in a row to show a class" + (" (each compared)" if several
                                                                                    else ""), **many)
    q.add_argument("--hold-seconds", type=flag(RULES["hold_seconds"]), default=d.hold_seconds,
                   help=f"how long a class stays after its last win (default {d.hold_seconds:g})")
    q.add_argument("--floor-margin-db", type=flag(RULES["floor_margin_db"]), default=d.floor_margin_db,
                   help="also gate windows within this many dB of the recent floor (0: off; events-in-noise "
                        "compares it with and without, 6 dB when 0)")


def _evaluate(args) -> int:
    from models.gate import GateSettings
    from offline import evaluate

    command, folds = args.evaluate_command, getattr(args, "folds", None) and _folds(args.folds)
    if command == "checkpoints":
        evaluate.report_checkpoints(args.checkpoint, args.out_dir, args.data, folds, args.ensemble, args.classes)
    elif command == "cv":
        evaluate.report_cross_validation(args.out_dir, args.data, folds, args.probe, args.leak, args.recipe, args.epochs)
    elif command == "false-triggers":
        gate = GateSettings(silence_dbfs=args.silence_dbfs, min_confidence=args.min_confidence,
                            enter_windows=args.enter_windows, hold_seconds=args.hold_seconds,
                            floor_margin_db=args.floor_margin_db)
        evaluate.report_false_triggers(args.out_dir, gate, args.checkpoint, args.sounds)
    else:
        margin = args.floor_margin_db or 6.0
        gates = {f"p>={c:g}, {e} window(s), {f'floor {margin:g} dB' if floor else 'no floor'}":
                 GateSettings(silence_dbfs=args.silence_dbfs, min_confidence=c, enter_windows=e,
                              hold_seconds=args.hold_seconds, floor_margin_db=margin if floor else 0.0)
                 for c in args.min_confidence for e in args.enter_windows for floor in (False, True)}
        evaluate.report_events_in_noise(args.out_dir, gates, args.checkpoint, args.data, folds, args.bed_dbfs)
    return 0


# ----------------------------------------------------------------------------------------------------------
# auralize: what the ear believes a class sounds like

def _auralize_flags(p: argparse.ArgumentParser) -> None:
    from offline.auralize import GAIN_JITTER_DB, STEPS

    p.add_argument("class_name", metavar="CLASS", help="a class of the model")
    p.add_argument("-o", "--output", required=True, help="output .wav")
    p.add_argument("--checkpoint", type=flag(FILE), help="classifier checkpoint (default: the shipped one)")
    p.add_argument("--steps", type=flag(integer(1, 100_000)), default=STEPS, help=f"gradient steps (default {STEPS})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--normalize", action="store_true",
                   help="peak-normalise to -1 dBFS for listening (it is made to be heard as CLASS up to "
                        f"{GAIN_JITTER_DB:g} dB louder or quieter than it is found)")


def _auralize(args) -> int:
    from offline.auralize import auralize_to_file

    print(auralize_to_file(args.class_name, args.output, args.checkpoint, args.steps, args.seed, args.normalize))
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
    examples: str = ""


def _no_flags(p: argparse.ArgumentParser) -> None:
    pass


COMMANDS = [  # in the order a user meets them
    Command("run", "listen and show: the installation itself", _run_flags, _run, APP_LOG, """
  hear-and-see run                                   # the microphone, a window, a server on this machine
  hear-and-see run --config venue.toml --mode gallery
  hear-and-see run --input app/demo_audio --headless --duration 60 --output out/run
  hear-and-see run --server tcp://192.168.1.20:5555 --server-key keys/server.key
  hear-and-see run --server tcp://10.0.0.11:5555 tcp://10.0.0.12:5555 --server-key keys/server.key \
      --kiosk-key keys/kiosk_secrets/kiosk-1.key_secret     # a venue's kiosk: docs/venue.md
  hear-and-see run --server mdns --server-key keys/server.key   # the servers that advertise on the network"""),
    Command("serve", "run the inference server", _serve_flags, _serve, APP_LOG, """
  hear-and-see serve                                 # loopback, tcp://127.0.0.1:5555
  hear-and-see serve --bind tcp://0.0.0.0:5555 --server-secret-key keys/server.key_secret --device cuda
  hear-and-see serve --bind tcp://0.0.0.0:5555 --server-secret-key keys/server.key_secret --kiosk-keys keys/kiosks/
  hear-and-see serve --bind tcp://10.0.0.11:5555 --server-secret-key keys/server.key_secret --advertise"""),
    Command("devices", "list audio input devices", _no_flags, _devices, APP_LOG, """
  hear-and-see devices"""),
    Command("keys", "generate CurveZMQ keys for servers reachable beyond loopback, and their kiosks'", _keys_flags,
            _keys, APP_LOG, """
  hear-and-see keys keys/
  hear-and-see keys keys/ --kiosks 12    # and a key per kiosk: servers admit those alone (docs/venue.md)"""),
    Command("console-password", "set the web console's password (needed beyond this machine)",
            _console_password_flags, _console_password, ANSWER_LOG, """
  hear-and-see console-password --config venue.toml"""),
    Command("classify", "name the sound in audio files", _classify_flags, _classify, ANSWER_LOG, """
  hear-and-see classify dog.wav street.mp3
  hear-and-see classify moo.wav --classes animals --json
  hear-and-see classify moo.wav --config venue.toml --json   # the venue's taught sounds too"""),
    Command("teach", "teach it a sound of the venue's own, with a picture (a running server hears it within 2 s)",
            _teach_flags, _teach, ANSWER_LOG, """
  hear-and-see teach flute a.wav b.wav c.wav --picture flute.jpg
  hear-and-see teach moo --record 5 --as cow          # a child's moo shows the toy's cow
  hear-and-see teach bell x.wav y.wav z.wav --picture seed:church_bells
  hear-and-see teach --list
  hear-and-see teach --forget flute
  hear-and-see teach --export venue.zip               # ... and --import venue.zip on another machine"""),
    Command("prerender", "render zoom-dream sequences per class for the fallback", _prerender_flags, _prerender,
            APP_LOG, """
  hear-and-see prerender --classes cat,dog --frames 60"""),
    Command("seeds", "seed images: rebuild them from their sources, or generate missing ones", _seeds_flags, _seeds,
            APP_LOG, """
  hear-and-see seeds collect
  hear-and-see seeds generate helicopter"""),
    Command("train-tagger", "fine-tune the AudioSet network on ESC-50 (what ships), or fit a probe on it",
            _train_tagger_flags, _train_tagger, TRAINING_LOG, """
  hear-and-see train-tagger --test-folds 4 --out runs/tagger_fold4.pt
  hear-and-see train-tagger --probe --test-folds none --out runs/probe_all.pt --set probe_l2=1e-3"""),
    Command("train", "train a classifier on an ImageNet backbone (the paper's path)", _train_flags, _train,
            TRAINING_LOG, """
  hear-and-see train --test-folds 4 --out runs/fold4.pt
  hear-and-see train --test-folds 4 --set roll=0 specaugment=false"""),
    Command("ensemble", "one checkpoint serving the average of several", _ensemble_flags, _ensemble, ANSWER_LOG, """
  hear-and-see ensemble --out both.pt runs/tagger_all.pt runs/probe_all.pt"""),
    Command("evaluate", "score checkpoints, cross-validate, measure the gate on noise", _evaluate_flags, _evaluate,
            TRAINING_LOG, """
  hear-and-see evaluate checkpoints runs/cv_fold1.pt runs/cv_fold2.pt --classes animals
  hear-and-see evaluate cv --probe --leak
  hear-and-see evaluate false-triggers --sounds speech.wav
  hear-and-see evaluate events-in-noise --folds 4 --min-confidence 0.3 0.4"""),
    Command("auralize", "synthesise what the classifier believes a class sounds like", _auralize_flags, _auralize,
            ANSWER_LOG, """
  hear-and-see auralize dog -o dog.wav --normalize"""),
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand with its one-line help; the flags of `command` alone (see the module's docstring)."""
    parser = Parser(prog="hear-and-see", description=__doc__.split("\n")[0],
                    epilog="`hear-and-see COMMAND --help` lists a command's flags, with examples.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log everything (debug level)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help, description=c.help, epilog=f"examples:{c.examples}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(handler=c.handler, log=c.log)
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
    except UserError as exc:
        print(f"hear-and-see {args.command}: {exc}", file=sys.stderr)
    except OSError as exc:  # a file or folder the system refuses: the user's to put right
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hear-and-see {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
