"""The one command line (app/cli.py): every documented command parses, flags take their defaults from the
modules that own them, the light commands stay light, and a handler's refusal is said with its usage."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from app.cli import COMMANDS, build_parser, main
from tests.conftest import REPO_ROOT
from tests.synth_sounds import CLASSES


def documented_commands() -> list[tuple[str, ...]]:
    """Every `hear-and-see COMMAND ...` example in the README, BENCHMARKS.md and docs/, less the synopses
    (`[--flag X]`, `a|b`, `train ... / evaluate ...`, CAPITAL placeholders)."""
    names = {c.name for c in COMMANDS}
    found = set()
    for path in [REPO_ROOT / "README.md", REPO_ROOT / "BENCHMARKS.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        lines = re.findall(r"`(hear-and-see [^`\n]+)`", text) + re.findall(r"^\s*(hear-and-see .+)$", text, re.M)
        for line in lines:
            words = shlex.split(line.split(" #")[0])
            if (len(words) > 2 and words[1] in names and not re.search(r"\[|\||\s/\s", line)
                    and not any(re.fullmatch(r"[A-Z][A-Z.]+", w) for w in words)):
                found.add(tuple(words[1:]))
    return sorted(found)


def test_every_documented_command_parses():
    commands = documented_commands()
    covered = {argv[0] for argv in commands}
    assert {"run", "serve", "keys", "classify", "prerender", "train-tagger", "train", "ensemble",
            "evaluate"} <= covered, covered
    for argv in commands:
        build_parser(argv[0]).parse_args(argv)  # argparse exits on a flag that is gone


def test_flags_take_their_defaults_from_the_modules_that_own_them():
    from models.gate import GateSettings
    from offline import auralize, train, train_tagger

    assert build_parser("train-tagger").parse_args(["train-tagger"]).epochs == train_tagger.EPOCHS
    assert build_parser("auralize").parse_args(["auralize", "dog", "-o", "x.wav"]).steps == auralize.STEPS
    gate = build_parser("evaluate").parse_args(["evaluate"])
    assert (gate.silence_dbfs, gate.min_confidence, gate.enter_windows, gate.hold_seconds, gate.floor_margin_db) == (
        GateSettings.silence_dbfs, [GateSettings.min_confidence], [GateSettings.enter_windows],
        GateSettings.hold_seconds, GateSettings.floor_margin_db)
    for recipe in train.RECIPES:
        assert build_parser("train").parse_args(["train", "--recipe", recipe]).recipe == recipe


def test_a_command_help_shows_its_module_usage_examples(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train-tagger", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "hear-and-see train-tagger --probe-cv --test-folds 1 2 3 4" in out and "--set NAME=VALUE" in out


def test_help_devices_and_the_app_load_no_torch():
    # The top-level help and `devices` answer at once, and the app process (`run`) never loads torch.
    probe = ("import sys\nfrom app.cli import main\n"
             "for argv in (['--help'], ['run', '--help'], ['serve', '--help'], ['devices']):\n"
             "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO_ROOT,
                         env={**os.environ, "COLUMNS": "200"})  # one line per command in the help
    assert out.stdout.strip().splitlines()[-1] == "False"
    for c in COMMANDS:
        assert re.search(rf"^\s+{re.escape(c.name)}\s+{re.escape(c.help)}$", out.stdout, re.M), c.name


def test_train_tagger_set_changes_the_recipe_constants_that_run_reads(monkeypatch, capsys):
    from offline import train_tagger

    calls = []
    monkeypatch.setattr(train_tagger, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    for name in ("BATCH_SIZE", "START_FROM_PROBE", "LR_NETWORK", "EARLY_LOOKS_S"):  # restored after the test
        monkeypatch.setattr(train_tagger, name, getattr(train_tagger, name))
    assert main(["train-tagger", "--test-folds", "none", "--epochs", "2",
                 "--set", "BATCH_SIZE=4", "START_FROM_PROBE=1", "LR_NETWORK=1e-4", "EARLY_LOOKS_S=0.25,0.75"]) == 0
    assert (train_tagger.BATCH_SIZE, train_tagger.START_FROM_PROBE, train_tagger.LR_NETWORK) == (4, True, 1e-4)
    assert train_tagger.EARLY_LOOKS_S == (0.25, 0.75)
    assert main(["train-tagger", "--test-folds", "none", "--epochs", "2", "--set", "EARLY_LOOKS_S="]) == 0  # none: the probe of old
    assert train_tagger.EARLY_LOOKS_S == ()
    assert calls == [(((), None), dict(epochs=2, seed=0, use_probe=False))] * 2
    calls.clear()
    with pytest.raises(SystemExit) as exit:
        main(["train-tagger", "--set", "EPOCHS=3"])  # a constant of the file, but not one of the recipe's
    assert exit.value.code == 2
    assert "hear-and-see train-tagger: error: --set EPOCHS: not one of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        main(["train-tagger", "--set", "LR_NETWORK=fast"])  # a bad value is a usage error, not a traceback
    assert exit.value.code == 2
    assert "--set LR_NETWORK=fast: LR_NETWORK takes a float" in capsys.readouterr().err
    assert calls == []  # nothing ran


def test_evaluate_with_nothing_to_evaluate_says_so(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["evaluate"])
    assert exit.value.code == 2
    assert "say what to evaluate" in capsys.readouterr().err


def test_auralize_writes_what_the_classifier_hears_and_refuses_an_unknown_class(tmp_path, capsys):
    from models.model import build_model, save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("efficientnet_lite0", CLASSES, pretrained=False), tmp_path / "tiny.pt")
    out = tmp_path / "sounds" / "tone.wav"
    assert main(["auralize", "tone", "-o", str(out), "--checkpoint", str(ckpt), "--steps", "2", "--normalize"]) == 0
    wave, rate = sf.read(out)
    assert rate == 16_000 and len(wave) == 4 * 16_000
    assert np.abs(wave).max() == pytest.approx(0.89, abs=1e-3)  # --normalize: -1 dBFS peak
    assert re.search(r"hears it as tone with p = [01]\.\d\d", capsys.readouterr().out)
    with pytest.raises(SystemExit) as exit:
        main(["auralize", "unicorn", "-o", str(out), "--checkpoint", str(ckpt)])
    assert exit.value.code == 2
    assert "hear-and-see auralize: error: 'unicorn' is not a class of this model" in capsys.readouterr().err


def test_auralize_makes_a_sound_for_an_ensemble_of_waveform_ears(tmp_path, capsys):
    # The shipped kind of checkpoint: mn04 TaggingClassifiers, whose forward takes the waveform, not a log-mel.
    from models import efficientat
    from models.model import Ensemble, build_model, save_checkpoint

    torch.manual_seed(0)
    members = [build_model(efficientat.NAME, CLASSES, pretrained=False) for _ in range(2)]
    ckpt = save_checkpoint(Ensemble(members), tmp_path / "tiny_mn04.pt")
    out = tmp_path / "tone.wav"
    assert main(["auralize", "tone", "-o", str(out), "--checkpoint", str(ckpt), "--steps", "2"]) == 0
    wave, rate = sf.read(out)
    assert rate == 16_000 and len(wave) == 4 * 16_000 and 0 < np.abs(wave).max() < 1
    assert re.search(r"hears it as tone with p = [01]\.\d\d", capsys.readouterr().out)
