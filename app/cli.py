"""hear-and-see: the one command line. Heavy modules are imported inside each subcommand, so
`hear-and-see devices` or `--help` start at once and the app process never loads torch."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from app.config import MODES, ConfigError, load_settings
from common.paths import DEMO_AUDIO


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before torch loads: OpenMP threads that spin while waiting starve everything else on a shared CPU
    # (measured: 2-thread dreams fell from ~6 to under 1 keyframe/s beside another torch job).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Training and evaluation parse their own flags.
    delegated = {"train": ("offline.train", "main"), "train-tagger": ("offline.train_tagger", "main"),
                 "evaluate": ("offline.evaluate", "main"), "classify": ("offline.evaluate", "classify_main"),
                 "auralize": ("offline.auralize", "auralize_main"), "ensemble": ("models.model", "ensemble_main")}
    if argv and argv[0] in delegated:
        module, function = delegated[argv[0]]
        return getattr(__import__(module, fromlist=[function]), function)(argv[1:]) or 0

    parser = argparse.ArgumentParser(prog="hear-and-see", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in delegated:
        sub.add_parser(name, help=f"see `hear-and-see {name} --help`", add_help=False)

    serve = sub.add_parser("serve", help="run the inference server")
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555")
    serve.add_argument("--config", help="venue TOML file")
    serve.add_argument("--mode", choices=MODES,
                       help="the mode's gate and dream settings (the app passes its own)")
    serve.add_argument("--checkpoint", help="classifier checkpoint (default: the shipped model)")
    serve.add_argument("--backbone", help="insist on this backbone (the checkpoint must match)")
    serve.add_argument("--seeds", help="seed image folder (a folder per class)")
    serve.add_argument("--dream-size", type=int)
    serve.add_argument("--device", help="torch device: cuda, mps or cpu (default: the best there is)")
    serve.add_argument("--threads", type=int, help="torch CPU threads (default: all cores but one)")
    serve.add_argument("--server-secret-key", help="CurveZMQ secret key file, needed to bind beyond loopback")

    run = sub.add_parser("run", help="listen and show: the installation itself")
    run.add_argument("--input", help="play this recording in real time instead of a microphone")
    run.add_argument("--device", help="input device index or name (see `hear-and-see devices`)")
    run.add_argument("--server", help="tcp://HOST:PORT of a running server; default: start one locally")
    run.add_argument("--server-key", help="the server's CurveZMQ public key file (from `hear-and-see keys`)")
    run.add_argument("--config", help="venue TOML file")
    run.add_argument("--mode", choices=MODES)
    run.add_argument("--headless", action="store_true", help="render offscreen (EGL) instead of a window")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument("--output", help="save frames, a contact sheet and the label timeline here")
    run.add_argument("--frame-log", help="write one line per displayed frame to this file")
    run.add_argument("--fullscreen", action="store_true", default=None)

    prerender = sub.add_parser("prerender", help="render zoom-dream sequences per class for the fallback")
    prerender.add_argument("--classes", help="comma-separated classes (default: every class with a seed image)")
    prerender.add_argument("--frames", type=int, help="frames per class (default 120)")
    prerender.add_argument("--size", type=int, help="the dream's short side in pixels (default: the machine's "
                           "profile, as the live server picks it)")
    prerender.add_argument("--seeds", help="seed image folder (default: the gallery's seed_images/)")
    prerender.add_argument("--out", help="output folder (default: prerendered/)")
    prerender.add_argument("--backbone", default="efficientnet_lite0")
    prerender.add_argument("--weights", help="local ImageNet weights file for the backbone")
    prerender.add_argument("--intensity", type=float, default=1.0)
    prerender.add_argument("--zoom-speed", type=float, default=0.5)

    seeds = sub.add_parser("seeds", help="seed images: rebuild them from their sources, or generate missing ones")
    seeds_sub = seeds.add_subparsers(dest="seeds_command", required=True)
    seeds_sub.add_parser("collect", help="rebuild seed_images/ (gallery and toy) from the credited sources")
    generate = seeds_sub.add_parser("generate", help="generate seeds from the ImageNet head")
    generate.add_argument("classes", nargs="*", help="classes (default: every ESC-50 class without a seed image)")
    generate.add_argument("--size", type=int, default=224)

    sub.add_parser("devices", help="list audio input devices")
    keys = sub.add_parser("keys", help="generate CurveZMQ keys for a server reachable beyond loopback")
    keys.add_argument("directory", nargs="?", default="keys")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "run":
            return _run(args)
        if args.command == "prerender":
            return _prerender(parser, args)
        if args.command == "seeds":
            return _seeds(parser, args)
        if args.command == "devices":
            from app.capture import list_input_devices
            devices = list_input_devices()
            for d in devices:
                print(f"{d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['rate']:.0f} Hz)")
            if not devices:
                print("no audio input devices found")
            return 0
        if args.command == "keys":
            import zmq.auth
            directory = Path(args.directory)
            directory.mkdir(parents=True, exist_ok=True)
            public, secret = zmq.auth.create_certificates(directory, "server")
            print(f"server keys: {public} (give to clients) and {secret} (keep on the server)")
            return 0
    except ConfigError as exc:
        print(f"hear-and-see: {exc}", file=sys.stderr)
        return 2
    return 1


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
    from models.seeds import SeedImageError
    from models.model import CheckpointError

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
              gate=gate, dream=dream, curve_secret_key=secret, threads=args.threads)
    except (CheckpointError, BackboneError, SeedImageError, ValueError) as exc:
        print(f"hear-and-see serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _prerender(parser, args) -> int:
    import torch

    from models import seeds
    from offline.prerender import PRERENDER_FRAMES, PRERENDER_OUT, prerender

    seed_dir = Path(args.seeds) if args.seeds else seeds.SEED_DIR
    classes = args.classes.split(",") if args.classes else seeds.seed_classes(seed_dir)
    missing = [c for c in classes if not seeds.seed_image_paths(c, seed_dir)]
    if missing:
        parser.error(f"no seed image for {', '.join(missing)} in {seed_dir}; "
                     f"add one, or generate one with `hear-and-see seeds generate CLASS`")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    out = args.out or str(PRERENDER_OUT)
    n = prerender(classes, args.frames or PRERENDER_FRAMES, args.size, out_dir=out, backbone=args.backbone,
                  weights_path=args.weights, intensity=args.intensity, zoom_speed=args.zoom_speed, seed_dir=seed_dir)
    print(f"wrote {n} frames under {out}")
    return 0


def _seeds(parser, args) -> int:
    import torch

    from models.seeds import ESC50_TO_IMAGENET, seed_image_paths
    from offline.seed_collection import collect, generate_missing

    torch.set_num_threads(min(torch.get_num_threads(), 2))
    if args.seeds_command == "collect":
        paths = collect()
    else:
        classes = args.classes or [c for c in ESC50_TO_IMAGENET if not seed_image_paths(c)]
        unknown = [c for c in classes if c not in ESC50_TO_IMAGENET]
        if unknown:
            parser.error(f"no ImageNet class mapped for {unknown}; add them to ESC50_TO_IMAGENET")
        paths = generate_missing(classes, args.size)
    for path in paths:
        print(path)
    return 0


def _public_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    import zmq.auth
    try:
        return zmq.auth.load_certificate(path)[0]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a CurveZMQ key file ({exc}); make one with `hear-and-see keys`") from exc


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


if __name__ == "__main__":
    sys.exit(main())
