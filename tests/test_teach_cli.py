"""`hear-and-see teach`: from files, from the microphone (a PulseAudio null sink fed by paplay), list, forget, export
and import; `classify --config` hears a venue's taught sounds and `--json` lists them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np

from app.cli import main
from common.paths import REPO_ROOT
from models import taught
from tests.test_taught import examples, picture, tone, wav


def test_teach_list_export_import_forget_from_the_command_line(tmp_path, capsys):
    here, there = str(tmp_path / "here"), str(tmp_path / "there")
    takes = [str(p) for p in examples(tmp_path / "in", 3)]
    assert main(["teach", "ding", *takes, "--picture", str(picture(tmp_path / "p.png")), "--taught-dir", here]) == 0
    assert main(["teach", "moo", *takes, "--as", "cow", "--taught-dir", here]) == 0
    capsys.readouterr()
    assert main(["teach", "--list", "--taught-dir", here]) == 0
    listed = capsys.readouterr().out
    assert "ding" in listed and "moo" in listed and "shows cow" in listed and "(2 taught in" in listed
    assert main(["teach", "--export", str(tmp_path / "v.zip"), "--taught-dir", here]) == 0
    assert main(["teach", "--import", str(tmp_path / "v.zip"), "--taught-dir", there]) == 0
    assert [s.name for s in taught.taught_sounds(there)] == ["ding", "moo"]
    assert main(["teach", "--forget", "ding", "--taught-dir", there]) == 0
    assert [s.name for s in taught.taught_sounds(there)] == ["moo"]


def test_bad_input_is_one_line_exit_2_and_stores_nothing(tmp_path, capsys):
    root = str(tmp_path / "taught")
    takes = [str(p) for p in examples(tmp_path / "in", 3)]
    wav(tmp_path / "in" / "take1.wav", np.zeros(16000, np.float32))
    cases = [
        ["teach", "ding", *takes, "--picture", str(picture(tmp_path / "p.png"))],  # a silent example
        ["teach", "Ding!", *takes, "--picture", str(tmp_path / "p.png")],          # a bad name
        ["teach", "--forget", "nothing"],
        ["teach", "--import", str(tmp_path / "p.png")],                              # not a zip
    ]
    for argv in cases:
        assert main([*argv, "--taught-dir", root]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hear-and-see teach: ") and "\n" not in err and "Traceback" not in err
    assert not list((tmp_path / "taught").glob("*")) if (tmp_path / "taught").exists() else True


def test_classify_with_a_venue_file_hears_and_lists_its_taught_sounds(tmp_path, capsys):
    root = tmp_path / "taught"
    takes = []
    for i in range(3):
        takes.append(wav(tmp_path / f"t{i}.wav", tone(1.2, freq=600.0 + 10 * i)))
    taught.teach("trill", takes, picture(tmp_path / "p.png"), taught_dir=root)
    venue = tmp_path / "venue.toml"
    venue.write_text(f'taught_dir = "{root}"\n')
    probe = wav(tmp_path / "probe.wav", tone(1.2, freq=610.0))
    assert main(["classify", str(probe), "--json", "--config", str(venue)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["taught"] == ["trill"] and out["top"] == "trill" and "dog" in out["probabilities"]
    assert main(["classify", str(probe), "--json", "--config", str(venue), "--classes", "taught"]) == 0
    assert list(json.loads(capsys.readouterr().out)["probabilities"]) == ["trill"]


def test_teach_from_the_microphone(pulseaudio, tmp_path):
    """Three takes through PulseAudio's null sink: each played when the command asks for it, each cut at its onset
    by the app's detector, then stored by the library in a child process."""
    sound = wav(tmp_path / "sound.wav", tone(0.9, freq=700.0, lead=0.2))
    root = tmp_path / "taught"
    env = {**pulseaudio.env, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "teach", "zap", "--record", "3", "--device", "pulse",
                             "--picture", "seed:cow", "--taught-dir", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    said = []

    def answer():
        for line in proc.stdout:
            said.append(line)
            if "make the sound now" in line:
                pulseaudio.play(sound)
    reader = threading.Thread(target=answer, daemon=True)
    reader.start()
    try:
        assert proc.wait(timeout=180) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    assert sum("make the sound now" in line for line in said) == 3
    assert any(line.startswith("taught zap (3 examples") for line in said)
    stored = taught.taught_sounds(root)
    assert [s.name for s in stored] == ["zap"]
    import soundfile

    lengths = [len(soundfile.read(p)[0]) / 16000 for p in stored[0].examples]
    assert all(0.8 <= n <= 1.6 for n in lengths), lengths  # the tone's 0.9 s, cut from the quiet around it
    assert os.path.isfile(stored[0].picture)
