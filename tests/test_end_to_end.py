"""The whole loop, as `make run` runs it: a bundled recording played in real time into the capture loop,
a local inference server started by the app, dream frames back over TCP, drawn offscreen through EGL."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import REPO_ROOT


def test_bundled_recording_becomes_live_dream_frames_on_screen(tmp_path):
    venue = tmp_path / "venue.toml"
    # Whatever the shipped model makes of the dog, the gate must open for this test to be about the
    # pipeline: confidence 0 and a small dream keep it independent of training and quick on 2 cores.
    venue.write_text("min_confidence = 0.0\nsilence_dbfs = -90.0\ndream_size = 96\nwidth = 320\nheight = 180\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "run", "--input", str(REPO_ROOT / "app/demo_audio/dog.mp3"),
         "--headless", "--duration", "40", "--config", str(venue), "--output", str(out),
         "--frame-log", str(out / "frames.tsv")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    timeline = json.loads((out / "timeline.json").read_text())
    assert timeline["labels"], "no window was classified"
    assert timeline["first_live_frame_s"] is not None, proc.stderr[-3000:]
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
