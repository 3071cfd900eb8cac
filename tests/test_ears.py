"""The AudioSet-pretrained ear: mn04's weights, its tags, the tagging classifier's checkpoints, class sets that
reach past ESC-50, `classify --json`, and the server's gate reading the tags."""
from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

from common import protocol
from inference_server.server import DreamSettings, InferenceServer
from models import audio, efficientat
from models.backbones import create_backbone
from models.classes import AUDIOSET_CLASSES, CLASS_SETS, ESC50_CLASSES, class_set_probabilities, resolve_class_set
from models.gate import GateSettings
from models.model import CheckpointError, TaggingClassifier, build_model, load_model, save_checkpoint
from offline.evaluate import classify, noise

DEMO = Path(__file__).resolve().parents[1] / "app" / "demo_audio"


@pytest.fixture(scope="module")
def mn04():
    return efficientat.load_mn04()


def demo_window(name: str) -> np.ndarray:
    wave = audio.load_audio(DEMO / f"{name}.mp3")
    loudest = int(np.argmax(np.convolve(wave ** 2, np.ones(audio.SAMPLE_RATE), "same")))
    start = int(np.clip(loudest - audio.N_SAMPLES // 2, 0, max(0, len(wave) - audio.N_SAMPLES)))
    return audio.pad_or_trim(wave[start:start + audio.N_SAMPLES])


def tags_of(net, window: np.ndarray) -> dict[str, float]:
    with torch.no_grad():
        up = torch.from_numpy(efficientat.to_model_rate(window, audio.SAMPLE_RATE))[None]
        p = net(efficientat.LogMel()(up)).sigmoid()[0]
    return dict(zip(efficientat.audioset_labels(), p.tolist()))


def test_the_shipped_weights_load_with_every_key_matched(mn04):
    state = torch.load(efficientat.PRETRAINED_WEIGHTS, map_location="cpu", weights_only=True)
    assert set(state) == set(mn04.state_dict()) and len(state) == 312
    assert sum(p.numel() for p in mn04.parameters()) == 983_599  # the fact sheet's count
    state["features.99.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        efficientat.MN04().load_state_dict(state, strict=True)


def test_audioset_has_527_labels_in_output_order():
    labels = efficientat.audioset_labels()
    assert len(labels) == 527 and labels[0] == "Speech" and labels[74] == "Dog"


def test_kaldi_mel_filters_are_triangles_on_the_kaldi_scale():
    fb = efficientat.kaldi_mel_filters().numpy()
    assert fb.shape == (128, 513) and fb.max() <= 1.0 and (fb >= 0).all()
    assert not fb[:, -1].any()                        # the Nyquist bin has no weight
    assert not fb[:, int(15_000 / 31.25) + 1:].any()  # nothing above 15 kHz
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all()                # bands climb in frequency


@pytest.mark.parametrize("name, tag", [("dog", "Dog"), ("rooster", "Chicken, rooster"), ("frog", "Frog")])
def test_the_pretrained_network_tags_cc0_recordings_as_audioset_does(mn04, name, tag):
    tags = tags_of(mn04, demo_window(name))
    assert tags[tag] >= 0.5 and tag in sorted(tags, key=tags.get, reverse=True)[:3]


def test_a_sound_that_began_late_is_heard_from_its_onset():
    sr = audio.SAMPLE_RATE
    rng = np.random.default_rng(0)
    tone = lambda seconds: 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr).astype(np.float32)
    late = np.concatenate([np.zeros(int(3.5 * sr), np.float32), tone(0.5)])
    assert len(audio.from_onset(late)) == int(audio.MIN_HEARD_SECONDS * sr)  # never less than that is heard
    early = np.concatenate([np.zeros(1 * sr, np.float32), tone(3.0)])
    heard = audio.from_onset(early)
    assert len(heard) == int((3.0 + audio.ONSET_PREROLL_SECONDS) * sr) and heard[-1000:].any()
    assert np.abs(heard[:int(audio.ONSET_PREROLL_SECONDS * sr)]).max() == 0  # the preroll is the quiet before it
    quiet_room = noise("pink", audio.N_SAMPLES, -50, rng)
    quiet_room[-sr // 2:] += tone(0.5)  # a bell at -13 dBFS in a -50 dBFS room: the room before it is cut too
    assert len(audio.from_onset(quiet_room)) == int(audio.MIN_HEARD_SECONDS * sr)
    for whole in (np.zeros(audio.N_SAMPLES, np.float32), noise("pink", audio.N_SAMPLES, -40, rng), tone(4.0)):
        assert len(audio.from_onset(whole)) == audio.N_SAMPLES


def test_the_tagger_hears_each_window_from_its_onset(tagger_ckpt):
    """A bark half a second into a window after silence is heard as the bark alone would be (cut to the
    shortest length heard), in a batch with a window that is not cut."""
    model = load_model(tagger_ckpt)
    bark = demo_window("dog")
    late = np.concatenate([np.zeros(audio.N_SAMPLES - audio.SAMPLE_RATE // 2, np.float32), bark[:audio.SAMPLE_RATE // 2]])
    probs, tags = model.predict_with_tags(np.stack([late, bark]))
    cut = audio.from_onset(late)
    assert len(cut) == int(audio.MIN_HEARD_SECONDS * audio.SAMPLE_RATE)
    with torch.no_grad():
        logits, tag_logits = model.heads(model.front_end(model.inputs(torch.from_numpy(cut[None]))))
    assert np.allclose(probs[0], logits.softmax(-1)[0], atol=1e-5)
    assert np.allclose(tags[0], tag_logits.sigmoid()[0], atol=1e-5)
    assert np.allclose(probs[1], model.predict_with_tags(bark[None])[0][0], atol=1e-5)


def test_an_ensemble_hears_a_window_once_and_averages_its_members(tagger_ckpt):
    """Members share the front end: the ensemble cuts, resamples and makes the log-mel once, and says what
    the mean of its members heard on their own would say."""
    from models.model import Ensemble
    first = load_model(tagger_ckpt)
    torch.manual_seed(1)
    second = build_model(efficientat.NAME, ESC50_CLASSES)
    second.eval()
    with torch.no_grad():
        second.backbone.classifier[-1].bias -= 1.0  # and its tags, too
    both = Ensemble([first, second])
    bark = demo_window("dog")
    late = np.concatenate([np.zeros(audio.N_SAMPLES // 2, np.float32), bark[:audio.N_SAMPLES // 2]])
    wins = np.stack([late, bark])
    alone = [m.predict_with_tags(wins) for m in (first, second)]
    probs, tags = both.predict_with_tags(wins)
    assert not np.allclose(alone[0][0], alone[1][0], atol=1e-3)  # the members disagree, so the mean is a test
    assert not np.allclose(alone[0][1], alone[1][1], atol=1e-3)
    assert np.allclose(probs, (alone[0][0] + alone[1][0]) / 2, atol=1e-5)
    assert np.allclose(tags, (alone[0][1] + alone[1][1]) / 2, atol=1e-5)
    assert np.allclose(both.predict(wins), probs)


def test_the_room_is_tagged_as_background(mn04):
    from models.gate import TagReader
    reader = TagReader(efficientat.audioset_labels())
    rng = np.random.default_rng(0)
    for kind in ("white", "pink"):
        tags = tags_of(mn04, noise(kind, audio.N_SAMPLES, -35, rng))
        assert reader.kind([tags[n] for n in efficientat.audioset_labels()]) == "background"
    tags = tags_of(mn04, demo_window("dog"))
    assert reader.kind([tags[n] for n in efficientat.audioset_labels()]) == "event"


@pytest.fixture(scope="module")
def tagger_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(efficientat.NAME, ESC50_CLASSES)  # pretrained network, untrained head
    return save_checkpoint(model, tmp_path_factory.mktemp("tagger") / "tagger.pt", recipe=dict(name="untrained"),
                           metrics=dict(train_folds=[1, 2, 3]))


def test_a_tagging_checkpoint_round_trips_and_gives_both_outputs_from_one_pass(tagger_ckpt):
    model = load_model(tagger_ckpt)
    assert isinstance(model, TaggingClassifier) and model.trained
    probs, tags = model.predict_with_tags(np.stack([demo_window("dog"), np.zeros(audio.N_SAMPLES, np.float32)]))
    assert probs.shape == (2, 50) and np.allclose(probs.sum(-1), 1, atol=1e-4)
    assert tags.shape == (2, 527) and model.tag_names[int(tags[0].argmax())] in ("Dog", "Animal", "Bark")
    assert np.allclose(model.predict(demo_window("dog")), probs[:1], atol=1e-5)


def test_a_tagging_checkpoint_for_other_front_end_settings_is_refused(tagger_ckpt, tmp_path):
    ck = torch.load(tagger_ckpt, map_location="cpu", weights_only=True)
    ck["features"]["hop_length"] = 160
    torch.save(ck, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="hop_length"):
        load_model(tmp_path / "other.pt")


def test_the_tagger_runs_on_the_best_device_there_is(tagger_ckpt):
    from models.backbones import default_device
    device = default_device()
    model = load_model(tagger_ckpt, device=device)
    assert next(model.parameters()).device.type == device.type
    probs, tags = model.predict_with_tags(np.zeros(audio.N_SAMPLES, np.float32))
    assert probs.shape == (1, 50) and tags.shape == (1, 527)


def test_a_class_set_reaches_past_esc50_through_the_audioset_head():
    names = efficientat.audioset_labels()
    farm = resolve_class_set("farm", ESC50_CLASSES, names)
    assert {"horse", "duck", "owl"} <= set(farm) and set(farm) - set(AUDIOSET_CLASSES) <= set(ESC50_CLASSES)
    with pytest.raises(ValueError, match="AudioSet tags"):
        resolve_class_set("farm", ESC50_CLASSES)  # a classifier without tags cannot hear a horse
    esc = np.full(50, 0.001)
    esc[ESC50_CLASSES.index("cow")] = 0.95
    esc /= esc.sum()  # a classifier's probabilities: all of it given to one class or another
    tags = np.zeros(527)
    quiet = class_set_probabilities(esc, ESC50_CLASSES, farm, tags, names)
    assert farm[int(quiet.argmax())] == "cow" and quiet.sum() == pytest.approx(1)
    tags[names.index("Neigh, whinny")] = 0.9
    neigh = class_set_probabilities(esc, ESC50_CLASSES, farm, tags, names)
    assert farm[int(neigh.argmax())] == "horse" and neigh.sum() == pytest.approx(1)
    assert neigh[farm.index("horse")] > 0.85
    assert CLASS_SETS["animals"] == ESC50_CLASSES[:10]


def test_classify_json_keeps_its_fields_and_adds_the_audioset_tags(tagger_ckpt):
    out = io.StringIO()
    files = [str(DEMO / "dog.mp3"), str(DEMO / "frog.mp3")]
    assert classify(files, tagger_ckpt, json_out=True, stream=out, classes="farm") == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["file"] for r in rows] == files
    for r in rows:
        assert set(r["probabilities"]) == set(CLASS_SETS["farm"])
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert r["top"] == max(r["probabilities"], key=r["probabilities"].get)
        assert len(r["tags"]) == 5 and all(isinstance(n, str) and 0 <= p <= 1 for n, p in r["tags"])
    assert rows[0]["tags"][0][0] in ("Dog", "Animal") and "Frog" in [n for n, _ in rows[1]["tags"][:2]]


def test_the_server_reads_the_tags_noise_is_never_a_picture_and_a_bark_is(tagger_ckpt, address):
    classifier = load_model(tagger_ckpt)
    server = InferenceServer(classifier, create_backbone("efficientnet_lite0", pretrained=False), DEMO, address,
                             gate=GateSettings(silence_dbfs=-90, min_confidence=0.0, enter_windows=1),
                             dream=DreamSettings(size=64), context=zmq.Context())
    sock = server.ctx.socket(zmq.DEALER)
    sock.connect(server.address)

    def answer(parts):
        sock.send_multipart(parts)
        for _ in range(200):
            server.turn()
            if sock.poll(50):
                return protocol.decode(sock.recv_multipart())[0]
        raise AssertionError("no answer")

    try:
        answer(protocol.encode(protocol.HELLO, client="t", classes="farm"))
        hiss = noise("pink", audio.N_SAMPLES, -35, np.random.default_rng(0))
        header = answer(protocol.encode(protocol.AUDIO, hiss, id=1, sample_rate=audio.SAMPLE_RATE))
        assert header["label"] is None and header["tags"][0][0] in ("Pink noise", "Static", "White noise")
        header = answer(protocol.encode(protocol.AUDIO, demo_window("dog"), id=2, sample_rate=audio.SAMPLE_RATE))
        assert header["label"] in CLASS_SETS["farm"] and header["tags"][0][0] in ("Dog", "Animal")
    finally:
        sock.close(linger=0)
        server.socket.close(linger=0)


def test_train_tagger_fine_tunes_and_probes_on_a_small_dataset(tmp_path, monkeypatch):
    """The shipped recipe end to end on tone-against-hiss clips (the real run: 18 min a fold on ESC-50)."""
    from offline import train_tagger
    from tests.synth_sounds import CLASSES, make_esc50

    monkeypatch.setenv("HEAR_AND_SEE_CACHE", str(tmp_path / "cache"))
    recipe = train_tagger.TaggerRecipe(batch_size=4)
    root = make_esc50(tmp_path / "esc50", per_class_per_fold=2, seconds=5.0)
    probe = train_tagger.run([4], tmp_path / "probe.pt", recipe, data=root, use_probe=True)
    assert probe["accuracy"] == 1.0 and probe["test_folds"] == [4] and probe["train_folds"] == [1, 2, 3]
    tuned = train_tagger.run([4], tmp_path / "tuned.pt", replace(recipe, epochs=1), data=root)
    assert len(tuned["history"]) == 1 and np.isfinite(tuned["history"][0]["loss"])
    for name in ("probe.pt", "tuned.pt"):
        model = load_model(tmp_path / name)
        assert model.class_names == CLASSES and model.trained
        probs, tags = model.predict_with_tags(np.zeros(audio.N_SAMPLES, np.float32))
        assert probs.shape == (1, 2) and tags.shape == (1, 527)
    assert json.loads((tmp_path / "tuned.json").read_text())["recipe"]["name"] == "tagger"
    assert json.loads((tmp_path / "probe.json").read_text())["recipe"]["early_looks_s"] == list(recipe.early_looks_s)


def test_the_probe_also_hears_each_sound_as_its_first_looks_do():
    from offline.train_tagger import early_windows

    rate = audio.SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(1.5 * rate)) / rate).astype(np.float32)
    clip = np.concatenate([np.zeros(rate, np.float32), tone])  # 1 s of silence, then 1.5 s of tone
    wins, owner = early_windows([clip, tone], (0.25, 0.5, 2.0))
    assert wins.shape == (4, audio.N_SAMPLES) and owner.tolist() == [0, 0, 1, 1]  # 2 s is more than either has
    for win, after in zip(wins, (0.25, 0.5, 0.25, 0.5)):
        heard = int(after * rate)
        np.testing.assert_array_equal(win[:-heard - int(0.1 * rate)], 0)  # silence until the look's onset
        assert audio.rms_dbfs(win[-heard:]) > -15  # then the sound, up to the look


def test_freeze_bn_keeps_audiosets_statistics_while_the_weights_learn(tmp_path, monkeypatch):
    from offline import train_tagger
    from tests.synth_sounds import make_esc50

    monkeypatch.setenv("HEAR_AND_SEE_CACHE", str(tmp_path / "cache"))
    root = make_esc50(tmp_path / "esc50", per_class_per_fold=1, seconds=5.0)
    pretrained = efficientat.load_mn04()
    before = {**dict(pretrained.named_buffers()), **dict(pretrained.named_parameters())}

    def tuned(freeze: bool):
        recipe = train_tagger.TaggerRecipe(batch_size=4, epochs=1, freeze_bn=freeze)
        train_tagger.run([4], tmp_path / f"freeze{freeze}.pt", recipe, data=root)
        net = load_model(tmp_path / f"freeze{freeze}.pt").backbone
        stats = [(n, b) for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var"))]
        kept = all(torch.allclose(b.float(), before[n], rtol=1e-2, atol=1e-3) for n, b in stats)
        learned = any(not torch.allclose(p.float(), before[n], atol=1e-3) for n, p in net.named_parameters())
        return kept, learned

    assert tuned(True) == (True, True)
    assert tuned(False) == (False, True)
