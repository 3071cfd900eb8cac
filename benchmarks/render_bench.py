"""Renderer frame rate while keyframes stream in, as the installation runs it.

    python benchmarks/render_bench.py                       # EGL offscreen (no display needed)
    xvfb-run -a -s "-screen 0 1280x720x24" python benchmarks/render_bench.py --window

A 224x224 keyframe arrives every --interval seconds and the label's confidences change twice a
second (so the HUD is repainted as often as the app would); every frame is drawn and swapped
(offscreen, swap waits for the GPU to finish). The first second is discarded: shader JIT.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout, uninstalled

from app.config import Settings  # noqa: E402
from visualizer import Renderer, default_frame, open_display  # noqa: E402

WARMUP_S = 1.0


def run(args: argparse.Namespace) -> dict:
    display = open_display(args.width, args.height, headless=not args.window, vsync=False)
    renderer = Renderer(display.ctx, *display.size, palette="warm", hud_visible=not args.no_hud,
                        zoom_rate=Settings.zoom_rate)
    keyframes = [default_frame("bench", phase=i) for i in range(8)]
    rng = np.random.default_rng(0)

    start = time.perf_counter()
    next_keyframe = next_label = start
    last, sent = start, 0
    frame_ms, arrival = [], []
    while last - start < WARMUP_S + args.seconds:
        now = time.perf_counter()
        arrived = now >= next_keyframe
        if arrived:
            renderer.show_frame(keyframes[sent % len(keyframes)], "live")
            sent += 1
            next_keyframe += args.interval
        if now >= next_label:
            p = rng.dirichlet(np.ones(3))
            renderer.set_label("dog", float(p[0]), [("dog", p[0]), ("cat", p[1]), ("rain", p[2])], "listening")
            next_label += 0.5
        renderer.draw(now)
        display.events()
        display.swap()
        end = time.perf_counter()
        if now - start >= WARMUP_S:
            frame_ms.append(1000 * (end - last))
            arrival.append(arrived)
        last = end
    display.close()

    frame_ms, arrival = np.array(frame_ms), np.array(arrival)
    return dict(target="window (Xvfb/GLX)" if args.window else "offscreen (EGL)", size=display.size,
                hud=not args.no_hud, frames=len(frame_ms), keyframes=int(arrival.sum()),
                fps=1000 / frame_ms.mean(), mean_ms=frame_ms.mean(), p50_ms=np.percentile(frame_ms, 50),
                p99_ms=np.percentile(frame_ms, 99), max_ms=frame_ms.max(),
                arrival_mean_ms=frame_ms[arrival].mean() if arrival.any() else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between keyframes")
    parser.add_argument("--window", action="store_true", help="a pygame window (needs DISPLAY) instead of EGL")
    parser.add_argument("--no-hud", action="store_true")
    r = run(parser.parse_args())
    print(f"{r['target']} {r['size'][0]}x{r['size'][1]} hud={'on' if r['hud'] else 'off'}: "
          f"{r['fps']:.1f} fps mean over {r['frames']} frames ({r['keyframes']} keyframes); frame time "
          f"mean {r['mean_ms']:.1f} ms, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms; "
          f"frames with a keyframe arrival: mean {r['arrival_mean_ms']:.1f} ms")


if __name__ == "__main__":
    main()
