"""Training on tiny generated data (seconds, random-init backbone), and the real thing under -m heavy."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models import audio
from offline import datasets
from models.model import load_model, read_checkpoint
from app.cli import main
from common.errors import UserError
from offline.recipe import with_overrides
from offline.train import RECIPES, Recipe, crop_batch, fine_tune, spec_augment, train
from tests.conftest import SHARED
from tests.synth_sounds import make_esc50

PLAIN = Recipe(epochs=4, batch_size=4, lr=1e-3, label_smoothing=0.0, mixup_alpha=0.0, specaugment=False,
               gain_db=0.0, roll=0.0, eval_every=0)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEAR_AND_SEE_CACHE", str(tmp_path / "cache"))
    datasets._MEMORY.clear()
    torch.manual_seed(0)


@pytest.fixture
def tiny_esc50(tmp_path):
    return make_esc50(tmp_path / "esc50")


def test_crop_batch_shapes_and_energy_crop():
    rng = np.random.default_rng(0)
    n = audio.N_SAMPLES
    short = np.ones(n // 2, np.float32)
    event = np.zeros(5 * audio.SAMPLE_RATE, np.float32)
    event[-2000:] = 1.0  # a click at the very end of a 5 s clip
    r = Recipe(roll=0.0, gain_db=0.0)
    out = crop_batch([short, event] * 8, rng, r)
    assert out.shape == (16, n) and out.dtype == np.float32
    assert np.allclose(out[::2].sum(1), n // 2)  # a short clip is placed whole
    # the energy-aware crop finds the click far more often than a uniform crop (which keeps it 1/4 of the time)
    assert (out[1::2].sum(1) > 0).mean() > 0.6
    assert np.array_equal(crop_batch([event], rng, r, train=False)[0], event[:n])


def test_spec_augment_masks_with_the_floor():
    mel = torch.rand(2, audio.N_MELS, audio.N_FRAMES) + 1.0
    out = spec_augment(mel, torch.Generator().manual_seed(0), max_freq=20, max_time=40)
    assert out.shape == mel.shape and not torch.equal(out, mel)
    assert torch.all(out >= mel.amin(dim=(1, 2), keepdim=True))


def test_fine_tune_loss_decreases(tiny_esc50):
    ds = datasets.load_dataset(tiny_esc50, progress=False)
    train_set, _ = ds.fold_split([4])
    from models.model import build_model
    model = build_model("efficientnet_lite0", ds.class_names, pretrained=False)
    hist = fine_tune(model, train_set, PLAIN, progress=False)
    assert len(hist["loss"]) == 4
    assert hist["loss"][-1] < hist["loss"][0]


def test_linear_probe_beats_chance_and_writes_a_checkpoint(tiny_esc50, tmp_path):
    out = tmp_path / "probe.pt"
    res = train(tiny_esc50, test_folds=(4,), probe=True, pretrained=False, out=out, progress=False)
    assert res["metrics"]["accuracy"] >= 0.75  # 4 test clips, tone vs hiss
    ckpt = read_checkpoint(out)
    assert ckpt["recipe"]["name"] == "linear_probe" and ckpt["metrics"]["train_folds"] == [1, 2, 3]
    model = load_model(out)
    assert model.class_names == ["tone", "hiss"] and model.trained


def test_cli_trains_and_saves_a_loadable_checkpoint(tiny_esc50, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the .last.pt of a run goes to ./runs
    out, mj = tmp_path / "ck.pt", tmp_path / "m.json"
    held = tmp_path / "held.json"
    held.write_text(json.dumps(dict(metrics=dict(accuracy=0.5))))
    rc = main(["train", "--data", str(tiny_esc50), "--test-folds", "none", "--no-pretrained", "--epochs", "1",
               "--batch-size", "8", "--out", str(out), "--metrics-json", str(mj), "--metrics-from", str(held),
               "--no-progress"])
    assert rc == 0
    ckpt = read_checkpoint(out)
    assert ckpt["recipe"]["name"] == "best" and ckpt["recipe"]["epochs"] == 1
    assert ckpt["metrics"]["train_clips"] == 16 and ckpt["metrics"]["held_out"] == dict(accuracy=0.5)
    assert "accuracy" not in ckpt["metrics"]  # nothing was held out, so no test score is claimed
    assert json.loads(mj.read_text())["history"]["epoch"] == [1]
    assert not (tmp_path / "runs" / "ck.last.pt").exists()  # the partial checkpoint is cleaned up
    assert out.stat().st_size < 25e6
    p = load_model(out).predict(np.zeros(audio.N_SAMPLES, np.float32))
    assert p.shape == (1, 2) and np.isclose(p.sum(), 1, atol=1e-5)


def test_cli_errors_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--data", str(tmp_path / "nope"), "--no-progress"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "--data: got" in err and "an existing folder" in err


def test_paper_recipe_is_the_papers():
    r = RECIPES["paper"]
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay) == ("sgd", 1e-3, 0.9, 5e-4)


@pytest.mark.heavy
def test_real_esc50_fine_tune_fold4(tmp_path):
    """Folds 1-3 -> fold 4 with the shipped recipe: ~40-90 min on 2 cores."""
    root = Path(os.environ.get("HEAR_AND_SEE_ESC50", SHARED / "data" / "esc50"))
    if not (root / "esc50.csv").is_file():
        pytest.skip(f"ESC-50 not found at {root} (set HEAR_AND_SEE_ESC50)")
    res = train(root, test_folds=(4,), out=tmp_path / "fold4.pt", progress=False)
    assert res["metrics"]["accuracy"] > 0.80


def test_stretch_pitch_variants_are_made_offline():
    from offline.train import stretch_pitch_variants
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(audio.SAMPLE_RATE).astype(np.float32) * 0.1 for _ in range(3)]
    out = stretch_pitch_variants(waves, 2, seed=0)
    assert len(out) == 3 and all(len(v) == 2 for v in out)
    assert all(v.dtype == np.float32 and 0.8 * audio.SAMPLE_RATE < len(v) < 1.2 * audio.SAMPLE_RATE
               for vs in out for v in vs)


def test_init_from_a_checkpoint_with_other_classes_is_refused(tiny_esc50, tmp_path, capsys):
    from models.model import build_model, save_checkpoint
    other = save_checkpoint(build_model("efficientnet_lite0", ["a", "b"], pretrained=False), tmp_path / "o.pt")
    assert main(["train", "--data", str(tiny_esc50), "--init-from", str(other), "--epochs", "1", "--no-progress"]) == 2
    assert "classes differ" in capsys.readouterr().err


def test_set_overrides_recipe_fields_with_their_types():
    """One grammar for both trainers' recipes: FIELD=VALUE typed by the recipe's own fields."""
    from offline.train_tagger import TaggerRecipe

    assert with_overrides(Recipe(), ["roll=0", "specaugment=false", "stretch_pitch=2", "optimizer=sgd"]) == Recipe(
        roll=0.0, specaugment=False, stretch_pitch=2, optimizer="sgd")
    tagger = with_overrides(TaggerRecipe(), ["batch_size=4", "start_from_probe=1", "lr_network=1e-4",
                                             "early_looks_s=0.25,0.75"])
    assert (tagger.batch_size, tagger.start_from_probe, tagger.lr_network, tagger.early_looks_s) == (4, True, 1e-4,
                                                                                                    (0.25, 0.75))
    assert with_overrides(TaggerRecipe(), ["early_looks_s="]).early_looks_s == ()  # the probe without first looks
    assert TaggerRecipe() == TaggerRecipe()  # the default recipe is never changed by an override
    for bad, words in (("rol=0", "FIELD one of"), ("roll", "FIELD=VALUE"), ("epochs=many", "takes a int"),
                       ("specaugment=maybe", "takes true or false"), ("crop=middle", "crop 'middle' is not one of")):
        with pytest.raises(UserError, match=words):
            with_overrides(Recipe(), [bad])
    with pytest.raises(UserError, match="early_looks_s takes numbers separated by commas"):
        with_overrides(TaggerRecipe(), ["early_looks_s=soon"])


def test_cli_set_reaches_the_recipe_and_a_bad_one_is_a_clear_error(tiny_esc50, tmp_path, capsys):
    mj = tmp_path / "m.json"
    assert main(["train", "--data", str(tiny_esc50), "--no-pretrained", "--epochs", "1", "--batch-size", "8",
                 "--set", "specaugment=false", "roll=0", "--metrics-json", str(mj), "--no-progress"]) == 0
    recipe = json.loads(mj.read_text())["recipe"]
    assert recipe["specaugment"] is False and recipe["roll"] == 0.0 and recipe["epochs"] == 1
    assert main(["train", "--data", str(tiny_esc50), "--set", "nonsense=1", "--no-progress"]) == 2
    assert "nonsense=1" in capsys.readouterr().err


def test_random_split_holds_out_as_many_clips_drawn_from_every_fold(tiny_esc50):
    res = train(tiny_esc50, test_folds=(4,), random_split=True, pretrained=False, progress=False,
                epochs=1, batch_size=8, eval_every=0)
    m = res["metrics"]
    assert m["test_folds"] == "random" and m["test_clips"] == 4 and m["train_clips"] == 12
    assert m["train_folds"] == [1, 2, 3, 4]  # with 4 of 16 held out at random, fold 4 trains too


def test_waveform_cnn_learns_tone_from_hiss_and_is_never_saved(tiny_esc50, tmp_path):
    from models.waveform_cnn import WaveformCNN
    res = train(tiny_esc50, test_folds=(4,), backbone="waveform_cnn", recipe="waveform", progress=False,
                epochs=8, batch_size=4)
    assert isinstance(res["model"], WaveformCNN)
    assert res["history"]["loss"][-1] < res["history"]["loss"][0]
    assert res["metrics"]["accuracy"] >= 0.75  # 4 test clips
    for kwargs in (dict(out=tmp_path / "w.pt"), dict(probe=True), dict(recipe="best")):
        with pytest.raises(UserError, match="comparison row"):
            train(tiny_esc50, backbone="waveform_cnn", progress=False, **{"recipe": "waveform", **kwargs})
