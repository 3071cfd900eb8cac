"""Bad input, as a user gives it: each is one line naming the flag or setting, what it got and what it takes, exit
status 2, and nothing started (no child process), written (no output folder) or left running."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import soundfile as sf

from app.cli import main
from tests.conftest import REPO_ROOT, wait_until

DEMO_WAV = "demo.wav"   # a good recording, written by the fixture
NOT_AUDIO = "not_audio.wav"
VENUE = "venue.toml"

# (command line, venue file's text or None, words the one line must hold)
BAD = [
    (["run", "--input", "/nonexistent.wav"], None, ["--input", "'/nonexistent.wav'", "an existing file or folder"]),
    (["run", "--input", NOT_AUDIO], None, [NOT_AUDIO, "cannot read"]),
    (["run", "--server", "bogus"], None, ["--server", "'bogus'", "tcp://HOST:PORT"]),
    (["run", "--duration", "-1"], None, ["--duration", "'-1'", "a number above 0"]),
    (["run", "--duration", "soon"], None, ["--duration", "'soon'", "a number above 0"]),
    (["run", "--mode", "disco"], None, ["--mode", "'disco'", "gallery"]),
    (["run", "--config", "missing.toml"], None, ["--config", "an existing file"]),
    (["run", "--server-key", VENUE], "", ["not a CurveZMQ key file"]),
    (["run", "--server", "tcp://127.0.0.1:5555", "bogus"], None, ["--server", "'bogus'", "tcp://HOST:PORT"]),
    (["run", "--server", "tcp://10.9.8.7:5555"], None, ["10.9.8.7", "--server-key"]),  # no key: never connects
    (["run", "--kiosk-key", "/nonexistent.key_secret"], None, ["--kiosk-key", "an existing file"]),
    (["run", "--server", "mDNS"], None, ["--server", "'mDNS'", "'mdns'"]),
    (["run", "--config", VENUE], 'servers = ["mdns", "mdns"]\n', ["servers", "different"]),
    (["run", "--config", VENUE], 'servers = "mdns"\n', ["servers = 'mdns'", "a list"]),
    (["run", "--config", VENUE], 'servers = ["tcp://a:1", "tcp://a:1"]\n', ["servers", "different"]),
    (["run", "--config", VENUE], 'server = "tcp://a:1"\nservers = ["tcp://b:1"]\n', ["server and servers"]),
    (["run", "--config", VENUE], 'palette = "sepia"\n', ["palette = 'sepia'", "neutral, warm", "three numbers"]),
    (["run", "--config", VENUE], 'classes = "bogus"\n', ["classes = 'bogus'", "animals"]),
    (["run", "--config", VENUE], "width = -5\n", ["width = -5", "64..7680"]),
    (["run", "--config", VENUE], "min_confidence = 7\n", ["min_confidence = 7", "within 0..1"]),
    (["run", "--config", VENUE], "hop_seconds = 0\n", ["hop_seconds = 0", "0.05..4"]),
    (["run", "--config", VENUE], 'mode = "gallery"\nexit_chord = "q"\n', ["exit_chord = 'q'", "modifiers"]),
    (["run", "--config", VENUE], "colour = 1\n", ["unknown setting 'colour'"]),
    (["run", "--config", VENUE], "mode = \n", ["not a readable TOML file"]),
    (["serve", "--bind", "notaurl"], None, ["--bind", "'notaurl'", "tcp://HOST:PORT"]),
    (["serve", "--checkpoint", "/nonexistent.pt"], None, ["--checkpoint", "an existing file"]),
    (["serve", "--threads", "0"], None, ["--threads", "1..256"]),
    (["serve", "--device", "tpu"], None, ["--device", "cuda, cuda:N, mps or cpu"]),
    (["serve", "--config", VENUE], 'seeds_dir = "/no/such/seeds"\n', ["seeds_dir", "an existing folder"]),
    (["serve", "--server-secret-key", VENUE], "", ["not a CurveZMQ key file"]),
    (["serve", "--kiosk-keys", "/no/such/keys"], None, ["--kiosk-keys", "an existing folder"]),
    (["serve", "--config", VENUE], 'advertise = "yes"\n', ["advertise = 'yes'", "true or false"]),
    (["serve", "--advertise", "--bind", "ipc:///tmp/hear-and-see-never"], None, ["ipc://", "advertised"]),
    (["classify", "/nonexistent.wav"], None, ["files", "an existing file"]),
    (["classify", NOT_AUDIO], None, [NOT_AUDIO, "cannot"]),
    (["classify", "--hop", "0", DEMO_WAV], None, ["--hop", "'0'", "0.05..4"]),
    (["classify", "--top", "-1", DEMO_WAV], None, ["--top", "'-1'", "1..1000"]),
    (["classify", "--classes", "bogus", DEMO_WAV], None, ["--classes", "'bogus'", "animals"]),
    (["keys", "/proc/x"], None, ["/proc/x"]),
    (["keys", VENUE], "", [VENUE, "not a folder"]),
    (["keys", "--kiosks", "0"], None, ["--kiosks", "'0'", "1..999"]),
    (["train-tagger", "--test-folds", "x"], None, ["--test-folds", "'x'", "a fold number"]),
    (["train-tagger", "--test-folds", "none", "4"], None, ["'none' stands alone"]),
    (["train-tagger", "--set", "lr_head=fast"], None, ["--set lr_head=fast", "takes a float"]),
    (["train", "--set", "optimizer=adam"], None, ["optimizer 'adam' is not one of adamw, sgd"]),
    (["train", "--epochs", "0"], None, ["--epochs", "1..10000"]),
    (["prerender", "--classes", "unicorn"], None, ["no seed image for unicorn"]),
    (["prerender", "--intensity", "2"], None, ["--intensity", "within 0..1"]),
    (["auralize", "dog", "-o", "x.wav", "--steps", "0"], None, ["--steps", "1..100000"]),
    (["evaluate", "events-in-noise", "--min-confidence", "0.4", "2"], None, ["--min-confidence", "'2'", "0..1"]),
    (["evaluate", "false-triggers", "--sounds", "/nonexistent.wav"], None, ["--sounds", "an existing file"]),
    (["ensemble", "--out", "x.pt", "/nonexistent.pt"], None, ["checkpoints", "an existing file"]),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / DEMO_WAV, 0.1 * np.sin(np.arange(16_000) / 5.0).astype(np.float32), 16_000)
    (tmp_path / NOT_AUDIO).write_text("this is not a recording")
    return tmp_path


@pytest.mark.parametrize("argv, venue, words", BAD, ids=[" ".join(a) + (f" [{v.strip()}]" if v else "")
                                                         for a, v, _ in BAD])
def test_a_bad_input_is_one_line_exit_2_and_starts_nothing(workdir, capsys, argv, venue, words):
    if venue is not None:
        (workdir / VENUE).write_text(venue)
    if argv[0] == "run":
        argv = [*argv, "--headless", "--output", "out"]
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own refusals
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    line = err.strip()
    assert line.startswith(f"hear-and-see {argv[0]}"), line
    assert all(w in line for w in words), line
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before  # nothing started
    assert not (workdir / "out").exists()  # nothing written


def test_a_bad_recording_leaves_no_server_running(tmp_path):
    """The app as a user starts it: a recording that cannot be read is said before the local server starts, so no
    server outlives it (it used to be left running, with no parent, for as long as nobody noticed)."""
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    mark = f"hear-and-see-test-{time.monotonic_ns()}"
    done = subprocess.run([sys.executable, "-m", "app.cli", "run", "--input", str(bad), "--headless",
                           "--duration", "5", "--output", str(tmp_path / "out")], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, env={**_env(), "HEAR_AND_SEE_MARK": mark})
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not _marked(mark)
    assert not (tmp_path / "out").exists()


def test_a_killed_app_takes_its_server_with_it(tmp_path):
    """However the app dies, even by SIGKILL, its local server goes too (the child asks the kernel to be told)."""
    mark = f"hear-and-see-test-{time.monotonic_ns()}"
    app = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--headless", "--duration", "120"], cwd=REPO_ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**_env(), "HEAR_AND_SEE_MARK": mark})
    try:
        server = wait_until("the app's local server to start",
                            lambda: [p for p in _marked(mark) if "serve" in p.cmdline()], timeout=60)
        app.kill()
        app.wait(timeout=30)
        wait_until("the server to end with its app",
                   lambda: [p for p in server if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
                   lambda running: not running, timeout=30)
    finally:
        app.kill()
        for p in _marked(mark):
            p.kill()


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "DISPLAY"}


def _marked(mark: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("HEAR_AND_SEE_MARK") == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found
