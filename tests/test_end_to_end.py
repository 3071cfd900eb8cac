"""The whole loop, as `make run` runs it: a bundled recording played in real time into the capture loop,
a local inference server started by the app, dream frames back over TCP, drawn offscreen through EGL."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT, wait_until

DEADLINE_S = 240.0  # a loaded 2-core machine: the server's start, the first window heard, three keyframes


def frame_log_rows(path) -> list[dict]:
    """The frame log's complete lines so far (it is written while the app runs)."""
    if not path.exists():
        return []
    text = path.read_text()
    return list(csv.DictReader(text[:text.rfind("\n") + 1].splitlines(), delimiter="\t"))


def progress(app, out) -> dict:
    """How far the run has got towards what the test asserts: three live keyframes on screen, ten frames saved."""
    return {"exit status": app.poll(), "frames saved": len(list((out / "frames").glob("*.png"))),
            "live keyframes": sorted({int(r["keyframe"]) for r in frame_log_rows(out / "frames.tsv")
                                      if r["source"] == "live"})}


def enough_to_judge(seen: dict) -> bool:
    return seen["exit status"] is not None or (len(seen["live keyframes"]) >= 3 and seen["frames saved"] >= 10)


def test_bundled_recording_becomes_live_dream_frames_on_screen(tmp_path):
    venue = tmp_path / "venue.toml"
    # Whatever the shipped model makes of the dog, the gate must open for this test to be about the
    # pipeline: confidence 0 and a small dream keep it independent of training and quick on 2 cores.
    venue.write_text("min_confidence = 0.0\nsilence_dbfs = -90.0\ndream_size = 96\nwidth = 320\nheight = 180\n")
    out = tmp_path / "out"
    log = tmp_path / "app.log"
    # Runs until it has shown what is asserted below, then is stopped as systemd would stop it; --duration
    # only bounds a run that never gets there.
    with open(log, "w") as log_file:
        app = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "run", "--input", str(REPO_ROOT / "app/demo_audio/dog.mp3"),
             "--headless", "--duration", str(DEADLINE_S + 60), "--config", str(venue), "--output", str(out),
             "--frame-log", str(out / "frames.tsv")],
            cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            try:
                wait_until("three live keyframes and ten saved frames (or the app's end)", lambda: progress(app, out),
                           enough_to_judge, timeout=DEADLINE_S, interval=0.2)
            except pytest.fail.Exception as waited_too_long:
                pytest.fail(f"{waited_too_long}\n{log.read_text()[-3000:]}")
        finally:
            app.send_signal(signal.SIGTERM)  # as systemd stops it; after a failed wait too, so nothing is left running
            try:
                returncode = app.wait(timeout=60)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
                raise
    stderr = log.read_text()
    assert returncode == 0, stderr[-3000:]
    timeline = json.loads((out / "timeline.json").read_text())
    assert timeline["labels"], "no window was classified"
    assert timeline["first_live_frame_s"] is not None, stderr[-3000:]
    rows = list(csv.DictReader(open(out / "frames.tsv"), delimiter="\t"))
    assert len(rows) == timeline["frames_drawn"] > 0
    live = [r for r in rows if r["source"] == "live"]
    assert live and all(r["class"] != "-" for r in live)
    # the number of the dream keyframe on screen: how live keyframes per second are counted
    numbers = [int(r["keyframe"]) for r in live]
    assert numbers == sorted(numbers) and len(set(numbers)) >= 3
    assert all(r["keyframe"] == "-" for r in rows if r["source"] != "live")
    assert min(float(r["mean_luminance"]) for r in rows) > 5.0, "a black frame was drawn"
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.ndim == 3 and sheet.mean() > 5.0
    assert len(list((out / "frames").glob("*.png"))) >= 10
