"""Many kiosks on one server: live keyframes per second in total, and the round trip window -> RESULT, for 1, 2, 4
and 8 kiosks, with the clients' dream steps batched together (at most 2, and at most all the kiosks) against one
client's step at a time (batch 1, the turn-taking), in the same run.

The server is the real InferenceServer (the shipped classifier, the dream backbone with its ImageNet weights, the
device's dream size) on a thread of this process; the kiosks are real ZeroMQ DEALER sockets on 127.0.0.1, driven
from the main thread as the app drives its one: HELLO, a STEER to a class of their own (every kiosk dreams, at
full intensity), frame credit kept at the app's window, a PING as often as the app's, and a 4 s window every --hop
seconds (the app's 0.5; 0: none, the dream alone). Each setting runs for --seconds after a warm-up; the settings
alternate over --rounds so that the machine's other load falls on both.
Reported per setting: keyframes/s over all kiosks, frames per kiosk (min/max: fairness), the round trip p50/p95
(the server's share of the app's 0.6 s from a sound's onset to its label) and the classifying in it (p50),
the server's time per dream step
(what a window waits for at most before it is heard) and the mean batch; and each batched setting's ratio to the
turn-taking.

With `--compare windows`, what is compared instead is the hearing: every kiosk's windows that arrived together
heard in one pass (up to 8) against one window at a time, the dream at the device's default batch; its
rows add the mean windows per pass.

Usage: python benchmarks/batch_bench.py [--device cpu] [--kiosks 1,2,4,8] [--seconds 20] [--rounds 2] [--hop 0.5]
       [--compare dreams|windows] [--out runs/batch_bench.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.client import CREDIT_WINDOW, PING_INTERVAL_S, free_tcp_address  # noqa: E402
from common import protocol  # noqa: E402
from inference_server.server import BATCH, DreamSettings, InferenceServer  # noqa: E402
from models.backbones import DREAM_BACKBONE, create_backbone, default_device  # noqa: E402
from models.dream import profile_size  # noqa: E402
from models.gate import GateSettings  # noqa: E402
from models.model import load_model  # noqa: E402

CLASSES = ["dog", "cat", "rooster", "cow", "frog", "sheep", "pig", "hen"]  # one per kiosk, all with seed images
WARM_UP_S = 5.0


class TimedServer(InferenceServer):
    """The server as it is, with the wall time of each dream step written down (a window waits for one)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_ms: list[float] = []
        self.heard_together: list[int] = []  # windows per pass of the classifier
        self.cuda = next(self.dream_backbone.parameters()).is_cuda

    def _hear_windows(self) -> None:
        if self._windows:
            self.heard_together.append(len(self._windows))
        super()._hear_windows()

    def _dream_step(self) -> None:
        steps = self.stats["dream_steps"]
        t = time.perf_counter()
        super()._dream_step()
        if self.stats["dream_steps"] > steps:
            if self.cuda:
                torch.cuda.synchronize()
            self.step_ms.append((time.perf_counter() - t) * 1000)


def tone(hz: float) -> np.ndarray:
    t = np.arange(64000) / 16000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def run(classifier, backbone, seeds_dir: Path, kiosks: int, batch: int, seconds: float, hop: float,
        hear_batch: int = 0) -> dict:
    """`kiosks` clients against a fresh server with these batch settings for WARM_UP_S + `seconds`."""
    address = free_tcp_address()
    server = TimedServer(classifier, backbone, seeds_dir, address, context=zmq.Context(),
                         gate=GateSettings(silence_dbfs=-200, min_confidence=0.0, enter_windows=1),
                         dream=DreamSettings(batch=batch), hear_batch=hear_batch)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop.is_set,), daemon=True)
    thread.start()
    ctx = zmq.Context()
    socks = []
    try:
        for k in range(kiosks):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(address)
            sock.send_multipart(protocol.encode(protocol.HELLO, client=f"kiosk{k}"))
            sock.send_multipart(protocol.encode(protocol.STEER, **{"class": CLASSES[k % len(CLASSES)],
                                                                   "intensity": 1.0, "layer": None}))
            sock.send_multipart(protocol.encode(protocol.CREDIT, last_frame=0, window=CREDIT_WINDOW))
            socks.append(sock)
        waves = [tone(220.0 * (k + 1)) for k in range(kiosks)]
        frames, last_frame = [0] * kiosks, [0] * kiosks
        sent_at: list[dict] = [{} for _ in range(kiosks)]
        latencies, classify_ms = [], []
        start = time.monotonic()
        measure_from, end = start + WARM_UP_S, start + WARM_UP_S + seconds
        never = float("inf")
        next_window, request = [start + k * hop / kiosks if hop > 0 else never for k in range(kiosks)], 0
        steps_before = images_before = step_count = None
        next_ping = start
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_ping:
                next_ping += PING_INTERVAL_S
                for sock in socks:
                    sock.send_multipart(protocol.encode(protocol.PING, t=time.time()))
            measuring = now >= measure_from
            if measuring and steps_before is None:
                steps_before, images_before = server.stats["dream_steps"], server.stats["dream_images"]
                step_count, passes_before = len(server.step_ms), len(server.heard_together)
            for k, sock in enumerate(socks):
                if now >= next_window[k]:
                    next_window[k] += hop
                    request += 1
                    sock.send_multipart(protocol.encode(protocol.AUDIO, waves[k], id=request, sample_rate=16000))
                    sent_at[k][request] = (now, measuring)
            for sock in zmq.select(socks, [], [], 0.01)[0]:
                k = socks.index(sock)
                while sock.poll(0):
                    header, _ = protocol.decode(sock.recv_multipart())
                    if header["kind"] == protocol.FRAME:
                        last_frame[k] = header["id"]
                        frames[k] += time.monotonic() >= measure_from
                        sock.send_multipart(protocol.encode(protocol.CREDIT, last_frame=last_frame[k],
                                                            window=CREDIT_WINDOW))
                    elif header["kind"] == protocol.RESULT and header["id"] in sent_at[k]:
                        sent, counted = sent_at[k].pop(header["id"])
                        if counted:
                            latencies.append((time.monotonic() - sent) * 1000)
                            classify_ms.append(header["ms"])
        steps = server.stats["dream_steps"] - steps_before
        step_ms = server.step_ms[step_count:]
        passes = server.heard_together[passes_before:]
        return dict(kiosks=kiosks, batch=batch, hear_batch=hear_batch,
                    windows_per_pass=round(float(np.mean(passes)), 2) if passes else None, seconds=seconds, keyframes_per_s=round(sum(frames) / seconds, 2),
                    frames_min=min(frames), frames_max=max(frames), windows=len(latencies),
                    round_trip_p50_ms=round(float(np.percentile(latencies, 50)), 1) if latencies else None,
                    round_trip_p95_ms=round(float(np.percentile(latencies, 95)), 1) if latencies else None,
                    classify_p50_ms=round(float(np.percentile(classify_ms, 50)), 1) if classify_ms else None,
                    step_p50_ms=round(float(np.percentile(step_ms, 50)), 1) if step_ms else None,
                    step_p95_ms=round(float(np.percentile(step_ms, 95)), 1) if step_ms else None,
                    mean_batch=round((server.stats["dream_images"] - images_before) / max(1, steps), 2),
                    errors=server.stats["errors"])
    finally:
        stop.set()
        thread.join(timeout=30)
        for sock in socks:
            sock.close()
        ctx.term()
        server.ctx.term()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=str(default_device()))
    p.add_argument("--kiosks", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--hop", type=float, default=0.5, help="seconds between a kiosk's windows; 0: no windows")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0: as `serve` sets them")
    p.add_argument("--compare", choices=("dreams", "windows"), default="dreams",
                   help="dreams: dream steps batched against turns; windows: windows heard together against alone")
    p.add_argument("--out", default="runs/batch_bench.json")
    args = p.parse_args(argv)
    return bench(torch.device(args.device), [int(n) for n in args.kiosks.split(",")], args.seconds, args.rounds,
                 args.hop, args.threads, args.out, args.compare)


def bench(device: torch.device, kiosk_counts: list[int], seconds: float, rounds: int, hop: float = 0.5,
          threads: int = 0, out: str | None = None, compare: str = "dreams") -> dict:
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) - 1))  # as `serve` does
    classifier = load_model(device=device)
    backbone = create_backbone(DREAM_BACKBONE).to(device).eval()
    summary = dict(date=time.strftime("%Y-%m-%d %H:%M"), machine=f"{platform.machine()}, {os.cpu_count()} cores",
                   device=str(device), accelerator=torch.cuda.get_device_name() if device.type == "cuda" else None,
                   torch_threads=torch.get_num_threads(), dream_size=profile_size(device),
                   default_batch=BATCH.get(device.type, 1), hop_s=hop, compare=compare, runs=[])
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}), flush=True)
    if compare == "dreams":
        settings = [(n, b, 0) for n in kiosk_counts for b in sorted({1, min(2, n), n})]
    else:
        settings = [(n, BATCH.get(device.type, 1), h) for n in kiosk_counts for h in (1, 8)]
    for r in range(rounds):
        for n, b, h in settings if r % 2 == 0 else settings[::-1]:
            row = run(classifier, backbone, ROOT / "seed_images", n, b, seconds, hop, h)
            summary["runs"].append(row)
            print(json.dumps(row), flush=True)
    summary["ratios"] = ratios(summary["runs"], "batch" if compare == "dreams" else "hear_batch")
    print(json.dumps(summary["ratios"]), flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(summary, indent=1))
    return summary


def ratios(runs: list[dict], varied: str = "batch") -> list[dict]:
    """Per kiosk count and setting of `varied` ("batch" or "hear_batch"): against one at a time (1), means over all
    rounds (None where nothing came)."""
    def mean(n, b, key):
        values = [r[key] for r in runs if r["kiosks"] == n and r[varied] == b and r[key] is not None]
        return float(np.mean(values)) if values else None

    def ratio(a, b):
        return round(a / b, 2) if a is not None and b else None

    out = []
    for n, b in sorted({(r["kiosks"], r[varied]) for r in runs if r[varied] > 1}):
        row = {"kiosks": n, varied: b}
        for key in ("keyframes_per_s", "round_trip_p50_ms", "round_trip_p95_ms", "step_p50_ms"):
            turns, batched = mean(n, 1, key), mean(n, b, key)
            row.update({f"{key}_turns": turns and round(turns, 2), f"{key}_batched": batched and round(batched, 2),
                        f"{key}_ratio": ratio(batched, turns)})
        out.append(row)
    return out


if __name__ == "__main__":
    main()
