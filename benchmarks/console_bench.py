"""The console's cost to the show: the window's fps with the console watched against without it.

One run of the app with its console on (the bundled recordings, headless, the venue's defaults otherwise)
alternates phases, once live dreams are on screen: nobody watching, then a page watching (the state stream with
the picture, and each new picture fetched, as the browser does), in the order U W W U. A second run has no console
at all. Per phase: fps and the 95th percentile frame interval from the frame log, and the app process's own CPU
time per frame drawn (the loop and the console's threads; the server is a process of its own), which a shared
machine's load disturbs less than fps. Then the loop's side alone: `Console.turn` per frame, unwatched and
watched, on a 1280x720 offscreen display.

    python benchmarks/console_bench.py [--phases 16] [--phase-seconds 6]
"""
from __future__ import annotations

import argparse
import csv
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(folder: Path, console_port: int, seconds: float) -> tuple[subprocess.Popen, Path]:
    """The installation on the bundled recordings, headless, at the venue's defaults (a 1280x720 window)."""
    venue = folder / "venue.toml"
    venue.write_text(f"console_port = {console_port}\n")
    frames = folder / "frames.tsv"
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--headless", "--input", "app/demo_audio",
                             "--config", str(venue), "--frame-log", str(frames), "--duration", str(seconds)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(folder / "app.log", "w"))
    return proc, frames


def wait_for_dreams(url: str, timeout: float = 400) -> float:
    """Seconds since the app started (its uptime) once live dream keyframes are on screen: before them the
    loop draws seed pictures only, which is cheaper, and would flatter whichever phase came first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "api/state", timeout=2) as answer:
                state = json.load(answer)
            if state.get("keyframes_per_s"):
                return state["uptime_s"]
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("no live dream within the time allowed")


def watch(url: str, stop: threading.Event) -> None:
    """What an open console page does: the stream with the picture, and each new picture fetched. It runs on the
    show's machine here, so its own CPU counts against the show (a phone or the office would not); one client
    for all of it, as a browser keeps its connection (httpx.get would build a client, and its TLS context, each
    time)."""
    import httpx

    last = 0
    with httpx.Client(timeout=10) as client, client.stream("GET", url + "api/stream?picture=1") as answer:
        for line in answer.iter_lines():
            if stop.is_set():
                return
            if line.startswith("data: "):
                picture = json.loads(line[6:]).get("picture", 0)
                if picture != last:
                    last = picture
                    client.get(url + "api/picture.jpg")


def turn_cost(n: int = 600) -> tuple[float, float]:
    """Microseconds per Console.turn, unwatched and watched, with a real offscreen display."""
    from types import SimpleNamespace

    from app.capture import RingBuffer
    from app.config import Settings
    from app.console import Console
    from app.controls import Bindings, Controls, class_list, parse_chord
    from app.modes import Plan, Scene, ShowState
    from visualizer.window import open_display

    display = open_display(1280, 720, headless=True)
    settings = Settings(console_port=free_port())
    bindings = Bindings("default", class_list("all"), parse_chord(settings.exit_chord))
    client = SimpleNamespace(alive=True, reconnects=0, round_trip_ms=1.0, address="tcp://127.0.0.1:1")
    source = SimpleNamespace(poll=lambda *a: None, stop=lambda: None)
    console = Console(settings, None, bindings, client, None, RingBuffer(), source, time.monotonic())
    plan = Plan(Scene("showing", "dog", 0.9, "fallback", [], "showing"), None, 0.05)
    costs = []
    try:
        for watchers in (0, 1):
            console.shared.watchers = watchers
            controls, start_at = Controls(zoom=0.05), time.monotonic()
            spent = 0.0
            for i in range(n):  # at 30 fps of simulated time: the picture is due once a second
                t0 = time.perf_counter()
                controls = console.turn(start_at + i / 30, controls, ShowState(), plan, [], display)
                spent += time.perf_counter() - t0
            costs.append(spent / n * 1e6)
    finally:
        console.stop()
        display.close()
    return costs[0], costs[1]


def cpu_seconds(process) -> float:
    """The app process's own CPU time (its loop, the console's threads; not the server, a process of its own)."""
    times = process.cpu_times()
    return times.user + times.system


def measure(frames: Path, samples: list, stopped_at: float) -> list[tuple]:
    """(label, fps, p95 ms, CPU ms per frame) per phase. `samples`: (label, wall time, CPU s) at each phase's
    start, then its end; the frame log's clock is matched to the wall clock by the last frame, drawn as it stopped."""
    last = float(frames.read_text().strip().splitlines()[-1].split("\t")[0])
    offset = stopped_at - last
    rows = []
    for (label, t0, c0), (_, t1, c1) in zip(samples[::2], samples[1::2]):
        times = np.array([float(r["seconds"]) for r in csv.DictReader(open(frames), delimiter="\t")])
        times = times[(times >= t0 - offset) & (times < t1 - offset)]
        gaps = np.diff(times)
        rows.append((label, (len(times) - 1) / (times[-1] - times[0]), float(np.percentile(gaps, 95) * 1000),
                     (c1 - c0) * 1000 / len(times)))
    return rows


def main() -> None:
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phases", type=int, default=16, help="unwatched/watched phases, alternating")
    parser.add_argument("--phase-seconds", type=float, default=6.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="console-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    (folder / "on").mkdir()
    proc, frames = start_app(folder / "on", port, 10_000)
    app = psutil.Process(proc.pid)
    wait_for_dreams(url)
    samples = []
    for i in range(args.phases):
        watched = i % 4 in (1, 2)  # U W W U U W W U: a drift in the machine's load falls on both alike
        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(url, stop), daemon=True) if watched else None
        if watcher:
            watcher.start()
            time.sleep(1.0)  # the page's first picture is on its way: measure from here
        label = "watched" if watched else "unwatched"
        samples.append((label, time.time(), cpu_seconds(app)))
        time.sleep(args.phase_seconds)
        samples.append((label, time.time(), cpu_seconds(app)))
        stop.set()
    proc.terminate()
    stopped_at = time.time()
    proc.wait(timeout=30)
    on = measure(frames, samples, stopped_at)
    # the baseline: no console at all, as long a show once live dreams are on screen
    (folder / "off").mkdir()
    proc, frames = start_app(folder / "off", 0, 10_000)
    app = psutil.Process(proc.pid)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and (not frames.exists() or "\tlive\t" not in frames.read_text()):
        time.sleep(0.5)  # the log is written in blocks: live dreams began a little earlier
    samples = []
    for i in range(args.phases // 2):
        samples.append(("without", time.time(), cpu_seconds(app)))
        time.sleep(args.phase_seconds)
        samples.append(("without", time.time(), cpu_seconds(app)))
    proc.terminate()
    stopped_at = time.time()
    proc.wait(timeout=30)
    off = measure(frames, samples, stopped_at)
    for label, fps, p95, cpu in on + off:
        print(f"  {label:9s} {fps:6.2f} fps  p95 frame interval {p95:6.1f} ms  app CPU {cpu:5.2f} ms/frame")
    mean = {k: np.mean([r[1:] for r in on + off if r[0] == k], axis=0) for k in ("without", "unwatched", "watched")}
    for k, (fps, p95, cpu) in mean.items():
        print(f"{k:9s} mean {fps:6.2f} fps  p95 {p95:6.1f} ms  app CPU {cpu:5.2f} ms/frame")
    print(f"fps ratio watched / unwatched (same run): {mean['watched'][0] / mean['unwatched'][0]:.3f}; "
          f"watched / without (another run): {mean['watched'][0] / mean['without'][0]:.3f}")
    print(f"app CPU per frame, watched / unwatched: {mean['watched'][2] / mean['unwatched'][2]:.3f}; "
          f"unwatched / without: {mean['unwatched'][2] / mean['without'][2]:.3f}")
    unwatched_us, watched_us = turn_cost()
    print(f"Console.turn per frame: {unwatched_us:.0f} us unwatched, {watched_us:.0f} us watched "
          f"(1280x720 offscreen, a picture read back once a second)")


if __name__ == "__main__":
    main()
