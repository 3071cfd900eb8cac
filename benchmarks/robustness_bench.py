"""Never a black screen, never a crash: the long and heavy checks, each against a real `hear-and-see serve`
process on 127.0.0.1 (request loops bounded in count and time; everything stops by itself).

  python benchmarks/robustness_bench.py fuzz [--cases 10000]     fuzzed messages, then an honest client
  python benchmarks/robustness_bench.py load [--clients 8 --seconds 60]   results, frames, latency per client
  python benchmarks/robustness_bench.py soak [--seconds 600]     server resident memory over time
  python benchmarks/robustness_bench.py recovery [--kills 10]    kill/restart the server under a running app
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.client import InferenceClient, free_tcp_address  # noqa: E402


# Every window shown, so every client dreams all the time (the heavy path): no confidence threshold, no energy
# gate, and no room floor (a steady test tone would otherwise become the floor and be gated off).
DREAM_ALWAYS = "min_confidence = 0.0\nsilence_dbfs = -90.0\nfloor_margin_db = 0.0\n"


def start_server(address: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--bind", address, *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until_serving(address: str, timeout: float = 120.0) -> float:
    """Seconds until a fresh client gets an answer."""
    started = time.monotonic()
    client = InferenceClient(address, "probe")
    try:
        while not client.alive:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no server at {address} after {timeout:.0f} s")
            client.poll(50)
    finally:
        client.close()
    return time.monotonic() - started


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def server_that_always_dreams(*extra: str):
    """(address, process) of a serving `hear-and-see serve *extra` under DREAM_ALWAYS, stopped on the way out."""
    address = free_tcp_address()
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as venue:
        venue.write(DREAM_ALWAYS)
        venue.flush()
        server = start_server(address, "--config", venue.name, *extra)
        try:
            wait_until_serving(address)
            yield address, server
        finally:
            stop(server)


def tone(seconds: float = 4.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def fuzz(args) -> None:
    from tests.test_robustness import fuzz as send_fuzz

    address = free_tcp_address()
    server = start_server(address)
    try:
        wait_until_serving(address)
        started = time.monotonic()
        send_fuzz(address, args.cases)
        took = time.monotonic() - started
        alive = server.poll() is None
        answered = wait_until_serving(address, timeout=10) if alive else None
        print(f"fuzz: {args.cases} cases in {took:.0f} s; server alive afterwards: {alive}; "
              f"an honest client answered after {answered:.2f} s" if alive else "fuzz: SERVER DIED")
    finally:
        stop(server)


def run_client(address: str, seconds: float, stats: dict, name: str, hz: float) -> None:
    client = InferenceClient(address, name)
    latencies, frames, sent_at = [], 0, {}
    end = time.monotonic() + seconds
    next_send = 0.0
    while time.monotonic() < end:
        now = time.monotonic()
        if client.alive and now >= next_send:
            next_send = now + 0.5
            request = client.send_window(tone(hz=hz), 16000)
            if request is not None:
                sent_at[request] = now
        results, frame = client.poll(20)
        for r in results:
            if r.id in sent_at:
                latencies.append((time.monotonic() - sent_at.pop(r.id)) * 1000)
        frames += frame is not None
    client.close()
    stats[name] = dict(results=len(latencies), frames=frames,
                       p50_ms=float(np.percentile(latencies, 50)) if latencies else None,
                       p95_ms=float(np.percentile(latencies, 95)) if latencies else None)


def load(args) -> None:
    # min_confidence 0: every client gets a class and so asks for dream frames, the heaviest case
    with server_that_always_dreams() as (address, _):
        stats: dict = {}
        threads = [threading.Thread(target=run_client, args=(address, args.seconds, stats, f"client{i}",
                                                             220.0 * (i + 1))) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name, s in sorted(stats.items()):
            print(f"{name}: {s['results']} results (p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms), "
                  f"{s['frames']} frames")
        frames = [s["frames"] for s in stats.values()]
        print(f"frames per client: min {min(frames)}, max {max(frames)} (fairness ratio "
              f"{min(frames) / max(1, max(frames)):.2f})")


def soak(args) -> None:
    import psutil

    with server_that_always_dreams() as (address, server):
        process = psutil.Process(server.pid)
        stats: dict = {}
        client = threading.Thread(target=run_client, args=(address, args.seconds, stats, "soak", 440.0))
        client.start()
        samples = []
        while client.is_alive():
            samples.append((time.monotonic(), process.memory_info().rss / 2**20))
            client.join(timeout=10)
        # After a warm-up (allocator pools, caches), memory should stay flat.
        warm = [m for t, m in samples if t - samples[0][0] >= 60] or [m for _, m in samples]
        print(f"soak {args.seconds:.0f} s: {stats['soak']['results']} results, {stats['soak']['frames']} frames; "
              f"server RSS after warm-up "
              f"{warm[0]:.0f} MiB -> end {warm[-1]:.0f} MiB (growth {100 * (warm[-1] / warm[0] - 1):+.1f} %), "
              f"max {max(warm):.0f} MiB")


def recovery(args) -> None:
    """An app runs headless with a frame log while its server is killed and restarted `kills` times."""
    address = free_tcp_address()
    with tempfile.TemporaryDirectory() as tmp, tempfile.NamedTemporaryFile("w", suffix=".toml") as venue:
        venue.write(DREAM_ALWAYS + "width = 640\nheight = 360\n")
        venue.flush()
        server = start_server(address, "--config", venue.name)
        wait_until_serving(address)
        log = Path(tmp) / "frames.tsv"
        app = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--server", address, "--config", venue.name,
                                "--input", str(ROOT / "app/demo_audio"), "--headless", "--frame-log", str(log)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        events = []
        time.sleep(15)
        for _ in range(args.kills):
            server.kill()
            server.wait()
            killed = time.monotonic() - started
            time.sleep(3)
            server = start_server(address, "--config", venue.name)
            wait_until_serving(address)
            back = time.monotonic() - started
            events.append((killed, back))
            time.sleep(8)
        app.terminate()
        app.wait(timeout=30)
        stop(server)
        rows = list(csv.DictReader(open(log), delimiter="\t"))
    times = np.array([float(r["seconds"]) for r in rows])
    luminance = np.array([float(r["mean_luminance"]) for r in rows])
    black = int((luminance < 5).sum())
    gaps = np.diff(times)
    print(f"recovery: {len(rows)} frames drawn over {times[-1]:.0f} s; black frames: {black}; "
          f"longest gap between drawn frames: {gaps.max() * 1000:.0f} ms")
    for killed, back in events:
        # the app's first live frame after the server answered again
        live_after = [t for t, r in zip(times, rows) if t > back and r["source"] == "live"]
        fallback_after = [t for t, r in zip(times, rows) if t > killed and r["source"] != "live"]
        recovery_s = live_after[0] - back if live_after else float("nan")
        noticed_s = fallback_after[0] - killed if fallback_after else float("nan")
        print(f"  killed at {killed:.1f} s: fallback on screen {noticed_s:.2f} s later; serving again at "
              f"{back:.1f} s: first live frame {recovery_s:.2f} s later")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="check", required=True)
    sub.add_parser("fuzz").add_argument("--cases", type=int, default=10_000)
    p = sub.add_parser("load")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60)
    sub.add_parser("soak").add_argument("--seconds", type=float, default=600)
    sub.add_parser("recovery").add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    {"fuzz": fuzz, "load": load, "soak": soak, "recovery": recovery}[args.check](args)


if __name__ == "__main__":
    main()
