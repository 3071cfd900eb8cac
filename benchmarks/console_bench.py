"""The console's cost to the show: the window's fps with the console watched against without it.

One run of the app with its console on (the bundled recordings, headless, the venue's defaults otherwise)
alternates phases of PHASE_S: nobody watching, then a page watching (the state stream with the picture, and each
new picture fetched, as the browser does). A second run has no console at all. fps per phase comes from the frame
log's timestamps, so all three are measured by the same clock; the ratios are what counts (the machine is shared).
Then the loop's side alone: `Console.turn` per frame, unwatched and watched, on a 1280x720 offscreen display.

    python benchmarks/console_bench.py [--phases 4] [--phase-seconds 15]
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
    venue = folder / "venue.toml"
    venue.write_text(f"console_port = {console_port}\n")
    frames = folder / "frames.tsv"
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--headless", "--input", "app/demo_audio",
                             "--config", str(venue), "--frame-log", str(frames), "--duration", str(seconds)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(folder / "app.log", "w"))
    return proc, frames


def fps_between(frames: Path, start: float, end: float) -> tuple[float, float]:
    """fps, and the 95th percentile frame interval in ms, of the frames drawn between start and end (run seconds)."""
    times = np.array([float(r["seconds"]) for r in csv.DictReader(open(frames), delimiter="\t")])
    times = times[(times >= start) & (times < end)]
    gaps = np.diff(times)
    return (len(times) - 1) / (times[-1] - times[0]), float(np.percentile(gaps, 95) * 1000)


def wait_for_server(url: str, timeout: float = 300) -> float:
    """Seconds since the app started (its uptime) once the server answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "api/state", timeout=2) as answer:
                state = json.load(answer)
            if state.get("server", {}).get("alive"):
                return state["uptime_s"]
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server never answered")


def watch(url: str, stop: threading.Event) -> None:
    """What an open console page does: the stream with the picture, and each new picture fetched."""
    import httpx

    last = 0
    with httpx.stream("GET", url + "api/stream?picture=1", timeout=10) as answer:
        for line in answer.iter_lines():
            if stop.is_set():
                return
            if line.startswith("data: "):
                picture = json.loads(line[6:]).get("picture", 0)
                if picture != last:
                    last = picture
                    httpx.get(url + "api/picture.jpg", timeout=5)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phases", type=int, default=4, help="unwatched/watched phases, alternating")
    parser.add_argument("--phase-seconds", type=float, default=15.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="console-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    total = 400 + args.phases * args.phase_seconds
    (folder / "on").mkdir()
    proc, frames = start_app(folder / "on", port, total)
    began = wait_for_server(url) + 5.0  # the first picture and the first sound settle
    time.sleep(5.0)
    phases = []
    for i in range(args.phases):
        watched = i % 2 == 1
        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(url, stop), daemon=True) if watched else None
        if watcher:
            watcher.start()
        time.sleep(args.phase_seconds)
        stop.set()
        phases.append((watched, began + i * args.phase_seconds + 1.0, began + (i + 1) * args.phase_seconds))
    proc.terminate()
    proc.wait(timeout=30)
    results = {w: [fps_between(frames, a, b) for watched, a, b in phases if watched == w] for w in (False, True)}
    unwatched = np.mean([f for f, _ in results[False]])
    watched = np.mean([f for f, _ in results[True]])
    # the baseline: no console at all, the same length of show after the server answers
    (folder / "off").mkdir()
    proc, frames = start_app(folder / "off", 0, 1000)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not frames.exists() or "live" not in frames.read_text()):
        time.sleep(0.5)
    start = float(frames.read_text().splitlines()[-1].split("\t")[0]) + 5.0
    time.sleep(5.0 + args.phases * args.phase_seconds / 2 + 1.0)
    proc.terminate()
    proc.wait(timeout=30)
    without, without_p95 = fps_between(frames, start, start + args.phases * args.phase_seconds / 2)
    unwatched_us, watched_us = turn_cost()
    print(f"fps without a console:       {without:.2f} (p95 frame interval {without_p95:.1f} ms)")
    print(f"fps console on, unwatched:   {unwatched:.2f} (p95 {np.mean([p for _, p in results[False]]):.1f} ms)")
    print(f"fps console on, watched:     {watched:.2f} (p95 {np.mean([p for _, p in results[True]]):.1f} ms)")
    print(f"ratio watched / without:     {watched / without:.3f}")
    print(f"ratio watched / unwatched:   {watched / unwatched:.3f} (same run)")
    print(f"Console.turn per frame:      {unwatched_us:.0f} us unwatched, {watched_us:.0f} us watched "
          f"(1280x720, a picture read back once a second)")


if __name__ == "__main__":
    main()
