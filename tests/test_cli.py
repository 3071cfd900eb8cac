"""The one command line (app/cli.py): every documented command parses, flags take their defaults from the
modules that own them and have help, the light commands stay light, and a handler's refusal is one line.
The table of bad inputs, run as a user runs them, is tests/test_bad_input.py."""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

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


def test_every_documented_command_parses(monkeypatch):
    # The files an example names are the reader's (runs/fold4.pt, dog.wav): every path exists for this test.
    for method in ("is_file", "is_dir", "exists"):
        monkeypatch.setattr(Path, method, lambda self: True)
    commands = documented_commands()
    covered = {argv[0] for argv in commands}
    assert {"run", "serve", "keys", "classify", "prerender", "train-tagger", "train", "ensemble",
            "evaluate"} <= covered, covered
    for argv in commands:
        build_parser(argv[0]).parse_args(argv)  # argparse exits on a flag that is gone


def test_flags_take_their_defaults_from_the_modules_that_own_them():
    from models.gate import GateSettings
    from offline import auralize, train

    assert build_parser("auralize").parse_args(["auralize", "dog", "-o", "x.wav"]).steps == auralize.STEPS
    for command, several in (("false-triggers", False), ("events-in-noise", True)):
        gate = build_parser("evaluate").parse_args(["evaluate", command])
        wrap = (lambda v: [v]) if several else (lambda v: v)
        assert (gate.silence_dbfs, gate.min_confidence, gate.enter_windows, gate.hold_seconds, gate.floor_margin_db) == (
            GateSettings.silence_dbfs, wrap(GateSettings.min_confidence), wrap(GateSettings.enter_windows),
            GateSettings.hold_seconds, GateSettings.floor_margin_db)
    for recipe in train.RECIPES:
        assert build_parser("train").parse_args(["train", "--recipe", recipe]).recipe == recipe


def test_every_command_and_flag_has_help_and_every_command_examples(capsys):
    for c in COMMANDS:
        assert c.examples.strip().startswith(f"hear-and-see {c.name}"), c.name
        parser = build_parser(c.name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[c.name]
        parsers = [sub] + [q for a in sub._actions if isinstance(a, argparse._SubParsersAction) for q in a.choices.values()]
        for q in parsers:
            for action in q._actions:
                if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                    assert action.help, f"{c.name}: {action.dest} has no help"


def test_a_command_help_shows_its_module_usage_examples(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train-tagger", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "hear-and-see train-tagger --probe-cv --test-folds 1 2 3 4" in out and "--set FIELD=VALUE" in out
    assert "examples:" in out and "probe_l2" in out  # the recipe's fields are listed


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


def test_train_tagger_set_changes_the_recipe_that_run_gets(monkeypatch, capsys):
    from offline import train_tagger

    calls = []
    monkeypatch.setattr(train_tagger, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert main(["train-tagger", "--test-folds", "none", "--epochs", "2",
                 "--set", "batch_size=4", "start_from_probe=1", "lr_network=1e-4", "early_looks_s=0.25,0.75"]) == 0
    (folds, out, recipe), options = calls.pop()
    assert (folds, out, options) == ((), None, dict(seed=0, use_probe=False))
    assert (recipe.epochs, recipe.batch_size, recipe.start_from_probe, recipe.lr_network, recipe.early_looks_s) == (
        2, 4, True, 1e-4, (0.25, 0.75))
    assert train_tagger.TaggerRecipe().batch_size == 32  # the module's recipe is not changed by a run
    for bad, words in ((["--set", "EPOCHS=3"], "--set EPOCHS=3: expected FIELD=VALUE with FIELD one of epochs"),
                       (["--set", "lr_network=fast"], "--set lr_network=fast: lr_network takes a float")):
        assert main(["train-tagger", *bad]) == 2
        assert f"hear-and-see train-tagger: {words}" in capsys.readouterr().err
    assert calls == []  # nothing ran


def test_evaluate_with_nothing_to_evaluate_says_so(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["evaluate"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "hear-and-see evaluate: the following arguments are required: checkpoints|cv|false-triggers|events-in-noise" \
        in err and len(err.splitlines()) == 1


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
    assert main(["auralize", "unicorn", "-o", str(out), "--checkpoint", str(ckpt)]) == 2
    assert "hear-and-see auralize: 'unicorn' is not a class of this model" in capsys.readouterr().err


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
