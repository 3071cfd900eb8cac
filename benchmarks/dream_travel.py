"""Dreams that travel: does the zoom travel, does another network still see the class, how fast, how sharp.

    python benchmarks/dream_travel.py quality     # 60 keyframes per seed, the engine before and now (~10 min)
    python benchmarks/dream_travel.py prerender   # `hear-and-see prerender` keyframes/s, start-up included (~2 min)
    python benchmarks/dream_travel.py app [--mode toy] [--docs]   # the real app in a 1280x720 window under Xvfb
    python benchmarks/dream_travel.py sheets      # docs/dreams_<set>.png: each seed, keyframes 1, 20, 60 on screen

Each prints one JSON line per measurement. The CPU this runs on is shared, so speed is reported as ratios against a
baseline measured in the same run, interleaved keyframe by keyframe.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see BENCHMARKS.md, "Threads"

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEYFRAMES = 60
SHEET_KEYFRAMES = (1, 20, 60)
SCREEN = (1280, 720)
# The engine before the travelling dream: square, pulled back to the seed every keyframe, no class pull.
BEFORE = {"aspect": 1.0, "blend": 0.2, "crossfade": 8, "smooth": False, "reseed": 0.0, "class_weight": 0.0}
SEEDS = (("gallery", "cat"), ("gallery", "dog"), ("toy", "dog"))


def _seed_dir(kind: str) -> Path:
    from models.seeds import SEED_DIR, TOY_SEED_DIR

    return SEED_DIR if kind == "gallery" else TOY_SEED_DIR


def _keyframes(engines: dict, n: int) -> tuple[dict, dict]:
    """n keyframes from each engine, interleaved so a neighbour's load hits all alike; (frames, seconds) by name."""
    frames = {k: [] for k in engines}
    seconds = {k: [] for k in engines}
    for i in range(n):
        for name, engine in engines.items():
            engine.rng.manual_seed(i)
            t = time.perf_counter()
            frames[name].append(engine.next_keyframe(1.0, 0.5))
            seconds[name].append(time.perf_counter() - t)
    return frames, seconds


def quality(args) -> None:
    import torch

    from models.backbones import create_backbone
    from models.dream import DreamEngine
    from models.seeds import imagenet_classes, load_seed_image, seed_image_path
    from offline.dream_quality import Judge, travel

    torch.set_num_threads(2)
    backbone = create_backbone("efficientnet_lite0", pretrained=True).eval()
    judge = Judge()
    for kind, name in SEEDS:
        rgb = load_seed_image(seed_image_path(name, _seed_dir(kind)))
        engines = {"before": DreamEngine(backbone, device="cpu", **BEFORE), "now": DreamEngine(backbone, device="cpu")}
        engines["before"].set_seed(name, rgb)
        engines["now"].set_seed(name, rgb, imagenet_classes(name))
        frames, seconds = _keyframes(engines, args.keyframes)
        ratio = float(np.median(np.array(seconds["now"][1:]) / np.array(seconds["before"][1:])))
        for version in engines:
            moved = travel(frames[version])
            print(json.dumps({"part": "quality", "seed": f"{kind}/{name}", "engine": version,
                              "shape": list(frames[version][0].shape[:2]),
                              "near": round(moved["near"], 4), "far": round(moved["far"], 4),
                              "travel": round(moved["ratio"], 2),
                              "lite2_top5": round(judge.top5_share(frames[version], imagenet_classes(name)), 2),
                              "keyframes_per_s": round(1 / float(np.median(seconds[version][1:])), 2),
                              "seconds_now_over_before": round(ratio, 2)}), flush=True)


def prerender(args) -> None:
    """Wall time of the command as a user runs it (process start, imports, weights, seeds, PNG writes)."""
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "app.cli", "prerender", "--classes", "cat,dog", "--frames",
                               str(args.keyframes), "--out", out], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        files = sorted(Path(out).glob("*/*.png"), key=lambda p: p.stat().st_mtime)
        first = files[0].stat().st_mtime
        steady = (len(files) - 1) / (files[-1].stat().st_mtime - first)
        print(json.dumps({"part": "prerender", "keyframes": len(files), "wall_s": round(wall, 1),
                          "keyframes_per_s_with_startup": round(len(files) / wall, 2),
                          "keyframes_per_s_steady": round(steady, 2),
                          "startup_s": round(wall - len(files) / steady, 1)}), flush=True)


def app(args) -> None:
    """`hear-and-see run` in a 1280x720 window under Xvfb with its own local server, playing the demo recordings:
    window fps and live keyframes/s from the frame log, and the detail of screenshots taken from the X server, above
    the HUD panel."""
    from models.seeds import SEED_DIR, load_seed_image
    from offline.dream_quality import detail_share
    from tests.conftest import XServer  # the tests' Xvfb + XGetImage helper
    from visualizer.hud import HudPainter

    x = XServer(SCREEN)
    out = Path(tempfile.mkdtemp())
    venue = out / "venue.toml"
    venue.write_text(f"width = {SCREEN[0]}\nheight = {SCREEN[1]}\nmin_confidence = 0.0\n")
    mode = ["--mode", args.mode] if args.mode else []
    env = x.env()
    log = open(out / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--input", str(ROOT / "app" / "demo_audio"),
                             "--config", str(venue), "--frame-log", str(out / "frames.tsv"), "--duration",
                             str(args.seconds), *mode], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    taken = []  # (wall-clock time, screenshot)
    try:
        while proc.poll() is None:
            time.sleep(1.5)
            if proc.poll() is None:
                taken.append((time.time(), x.screenshot()))
    finally:
        proc.wait()
        x.close()
    shots = _live_shots(taken, out)
    from PIL import Image
    for i, shot in enumerate(shots[:8]):
        Image.fromarray(shot).save(out / f"shot_{i:03d}.png")
    rows = _rows(out / "frames.tsv")
    t = np.array([float(r["seconds"]) for r in rows])
    live = [r for r in rows if r["source"] == "live"]
    live_t = np.array([float(r["seconds"]) for r in live])
    numbers = [int(r["keyframe"]) for r in live]
    # live keyframes per second: new keyframe numbers on screen, over the time live dreams were on screen
    changes = sum(1 for a, b in zip(numbers, numbers[1:]) if b != a)
    gaps = np.diff(live_t)
    live_s = float(gaps[gaps < 0.5].sum())  # leave out the stretches where the fallback was up
    # the detail of the dream alone: the HUD panel's text is sharp at any dream's resolution
    above_hud = HudPainter(*SCREEN).pos[1]
    detail = [detail_share(s[:above_hud]) for s in shots]
    photos = [detail_share(load_seed_image(p)) for p in sorted(SEED_DIR.glob("*/*.jpg"))]
    stretched = [detail_share(_as_if_224_square(s)[:above_hud]) for s in shots]
    if args.docs and shots:
        from PIL import Image

        for i, shot in enumerate((shots[len(shots) // 3], shots[-1])):  # one early in a class, one later
            Image.fromarray(shot).save(ROOT / "docs" / f"screen_{args.mode or 'default'}_{i + 1}.png")
    print(json.dumps({"part": "app", "mode": args.mode or "default", "seconds": round(float(t[-1] - t[0]), 1), "frames": len(rows),
                      "window_fps": round(len(rows) / float(t[-1] - t[0]), 1),
                      "live_seconds": round(live_s, 1), "live_keyframes_per_s": round(changes / max(live_s, 1e-9), 2),
                      "screenshots": len(shots),
                      "detail_median": round(float(np.median(detail)), 5) if detail else None,
                      "detail_if_224_square_stretched": round(float(np.median(stretched)), 5) if stretched else None,
                      "seed_photos_detail": [round(float(np.min(photos)), 4), round(float(np.median(photos)), 4),
                                             round(float(np.max(photos)), 4)],
                      "out": str(out)}), flush=True)


def _as_if_224_square(shot: np.ndarray) -> np.ndarray:
    """The same picture as the engine BEFORE delivered it: a 224 px square, stretched to cover the screen."""
    from PIL import Image

    h, w = shot.shape[:2]
    square = Image.fromarray(shot[:, (w - h) // 2:(w + h) // 2]).resize((224, 224), Image.Resampling.BOX)
    big = np.asarray(square.resize((w, w), Image.Resampling.BILINEAR))
    return big[(w - h) // 2:(w + h) // 2]


def _live_shots(taken: list, out: Path) -> list[np.ndarray]:
    """The screenshots taken while a live dream was on screen: every frame-log row from 1.5 s before to 0.5 s after
    the shot says "live" (the log counts from the app's start, placed by the time stamp of its first log line,
    which is written as the window opens)."""
    import datetime

    first = next(line for line in (out / "app.log").read_text().splitlines() if " 1280x720" in line)
    start = datetime.datetime.strptime(first[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    rows = _rows(out / "frames.tsv")
    seconds = np.array([float(r["seconds"]) for r in rows])
    live = np.array([r["source"] == "live" for r in rows])
    keep = []
    for wall, shot in taken:
        around = (seconds >= wall - start - 1.5) & (seconds <= wall - start + 0.5)
        if around.any() and live[around].all():
            keep.append(shot)
    return keep


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    head = lines[0].split("\t") if lines else []
    return [dict(zip(head, line.split("\t"))) for line in lines[1:-1]]


def sheets(args) -> None:
    """Per class set: each seed, then keyframes 1, 20 and 60 as a visitor sees them (the renderer at 1280x720)."""
    import torch

    from models.backbones import create_backbone
    from models.classes import CLASS_SETS
    from models.dream import DreamEngine
    from models.seeds import imagenet_classes, load_seed_image, seed_image_path
    from visualizer import Renderer, open_display
    from visualizer.window import save_contact_sheet

    torch.set_num_threads(2)
    backbone = create_backbone("efficientnet_lite0", pretrained=True).eval()
    display = open_display(*SCREEN, headless=True)
    renderer = Renderer(display.ctx, *display.size, vignette=0.35, hud_visible=False, zoom_rate=0.0)
    for class_set in args.sets.split(","):
        kind = "toy" if class_set == "toy" else "gallery"
        tiles = []
        for name in CLASS_SETS["animals" if class_set == "toy" else class_set]:
            rgb = load_seed_image(seed_image_path(name, _seed_dir(kind)))
            engine = DreamEngine(backbone, device="cpu")
            engine.set_seed(name, rgb, imagenet_classes(name))
            shown = [_on_screen(display, renderer, rgb, "seed")]
            for i in range(1, max(SHEET_KEYFRAMES) + 1):
                engine.rng.manual_seed(i)
                frame = engine.next_keyframe(1.0, 0.5)
                if i in SHEET_KEYFRAMES:
                    shown.append(_on_screen(display, renderer, frame, "live"))
            tiles += shown
            print(json.dumps({"part": "sheet", "set": class_set, "class": name}), flush=True)
        path = save_contact_sheet(tiles, ROOT / "docs" / f"dreams_{class_set}.png",
                                  columns=1 + len(SHEET_KEYFRAMES), cell_width=320)
        print(json.dumps({"part": "sheet", "written": str(path.relative_to(ROOT))}), flush=True)


def _on_screen(display, renderer, rgb: np.ndarray, source: str) -> np.ndarray:
    renderer.show_frame(rgb, source)
    t = time.monotonic()
    renderer.draw(t)
    renderer.draw(t + 5.0)  # past any fade
    return display.read_pixels()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("quality", "prerender", "app", "sheets"))
    p.add_argument("--keyframes", type=int, default=KEYFRAMES)
    p.add_argument("--seconds", type=float, default=75.0, help="app: how long it runs")
    p.add_argument("--mode", help="app: gallery, toy or performance (default: the default mode)")
    p.add_argument("--docs", action="store_true", help="app: save two screenshots as docs/screen_<mode>_N.png")
    p.add_argument("--sets", default="animals,natural,human,domestic,urban,toy",
                   help="sheets: class sets (models/classes.py; toy: the toy's animals from seed_images/toy)")
    args = p.parse_args(argv)
    {"quality": quality, "prerender": prerender, "app": app, "sheets": sheets}[args.part](args)


if __name__ == "__main__":
    main()
