"""Taught sounds heard: by the shipped ear (one pass of the network), through the gate, and by a running server that
picks up a sound taught or forgotten while it runs."""
from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest
import soundfile
import zmq

from common import protocol
from models import audio, taught
from models.gate import GateSettings, OpenSetGate
from tests.conftest import REPO_ROOT
from tests.test_taught import examples, picture, tone

N = audio.N_SAMPLES


@pytest.fixture(scope="module")
def shipped():
    from models.model import load_model

    return load_model()


def in_window(sound: np.ndarray, end_pad: float = 0.5) -> np.ndarray:
    """A 4 s window as the app sends it: quiet before the sound, the sound, a little after."""
    rng = np.random.default_rng(1)
    pad = np.zeros(int(end_pad * 16000), np.float32)
    w = np.concatenate([0.0005 * rng.standard_normal(N).astype(np.float32), sound, pad])[-N:]
    return w.astype(np.float32)


def test_the_ear_hears_a_taught_sound_in_one_pass_and_caches_what_it_made(shipped, tmp_path):
    root = tmp_path / "taught"
    ear = taught.TaughtEar(shipped, root)
    assert ear.class_names == shipped.class_names and ear.listener is shipped.members[1]
    taught.teach("warble", examples(tmp_path / "in", 4, seconds=1.2), picture(tmp_path / "p.png"), taught_dir=root)
    assert ear.refresh(force=True) and ear.class_names[-1] == "warble"
    cache = root / "warble" / "embeddings.npz"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    heard = ear.listen(np.stack([in_window(tone(1.2, freq=560.0, lead=0.0)), in_window(np.zeros(100, np.float32))]))
    # the classes' shares, less what the head hears as talk (shown as no class): a warble is hardly talk
    assert heard.probs.shape == (2, 51) and (heard.probs.sum(1) <= 1 + 1e-4).all() and heard.probs[0].sum() > 0.95
    assert heard.probs[0].argmax() == 50 and "warble" in heard.voiced[0] and "warble" in heard.taught[0]
    # a second ear with the same weights reads the cache instead of hearing the examples again
    again = taught.TaughtEar(shipped, root)
    assert again.class_names == ear.class_names and cache.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again._examples, ear._examples)
    # other weights: the cache is made again
    (root / "warble" / "embeddings.npz").write_bytes(b"damaged")
    taught.TaughtEar(shipped, root)
    with np.load(cache) as z:
        assert str(z["fingerprint"]) == ear.fingerprint


def test_a_sound_taught_as_a_builtin_adds_to_that_class(shipped, tmp_path):
    root = tmp_path / "taught"
    taught.teach("beep", examples(tmp_path / "in", 3, seconds=1.0), as_="cow", taught_dir=root)
    ear = taught.TaughtEar(shipped, root)
    assert ear.class_names == shipped.class_names
    heard = ear.listen(in_window(tone(1.0, freq=520.0, lead=0.0))[None])
    assert shipped.class_names[int(heard.probs[0].argmax())] == "cow"
    assert heard.taught[0] == {"cow"}  # the cow heard is the taught beep's: the gate holds it to taught_confidence
    dog = ear.listen(in_window(audio.load_audio(REPO_ROOT / "app/demo_audio/dog.mp3")[:N])[None])
    assert shipped.class_names[int(dog.probs[0].argmax())] == "dog" and dog.taught[0] == set()


def test_the_speech_rule_lets_a_voiced_taught_sound_through_and_nothing_else():
    tags = ["Speech", "Animal", "Silence"]
    gate = OpenSetGate(GateSettings(min_confidence=0.4), class_names=["dog", "moo"], tag_names=tags)
    talk = [0.9, 0.1, 0.0]
    assert gate.hears([0.1, 0.9], -20, 0.0, talk) == (None, 0.0)                  # speech: hidden
    assert gate.hears([0.1, 0.9], -20, 0.0, talk, voiced={"moo"}) == ("moo", 0.9)  # near its examples: shown
    assert gate.hears([0.8, 0.2], -20, 0.0, talk, voiced={"moo"}) == (None, 0.0)   # near, but not the winner
    assert gate.hears([0.7, 0.3], -20, 0.0, talk, voiced={"dog"})[0] == "dog"
    assert gate.hears([0.65, 0.35], -20, 0.0, talk, voiced={"dog"}) == ("dog", 0.65)
    assert gate.hears([0.35, 0.65], -20, 0.0, talk, voiced={"moo"})[0] == "moo"
    assert gate.hears([0.3, 0.3], -20, 0.0, talk, voiced={"dog"})[0] is None       # still needs its confidence
    assert gate.hears([0.1, 0.9], -20, 0.0, [0.0, 0.1, 0.9], voiced={"moo"}) == (None, 0.0)  # the room stays the room


def test_a_class_a_taught_sound_carries_is_held_to_taught_confidence():
    """The toy's rule: its built-in animals must be sure (0.6) before a child sees one; a child's own taught "moo",
    shown as the cow, need only be as sure as the toy always asked (0.3)."""
    gate = OpenSetGate(GateSettings(min_confidence=0.6, taught_confidence=0.3), class_names=["cow", "dog"])
    assert gate.hears([0.55, 0.45], -20, 0.0) == (None, 0.55)                    # the built-in cow: not sure enough
    assert gate.hears([0.55, 0.45], -20, 0.0, taught={"cow"}) == ("cow", 0.55)   # the taught moo's cow
    assert gate.hears([0.25, 0.75], -20, 0.0, taught={"cow"}) == ("dog", 0.75)   # the winner's rule, not another's
    assert gate.hears([0.2, 0.25], -20, 0.0, taught={"cow"}) == (None, 0.25)
    unset = OpenSetGate(GateSettings(min_confidence=0.6), class_names=["cow", "dog"])
    assert unset.hears([0.55, 0.45], -20, 0.0, taught={"cow"}) == (None, 0.55)   # unset: min_confidence for all


def espeak(text: str, voice: str, speed: int, path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return audio.load_audio(path)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make installs it)")
def test_a_word_taught_in_voices_is_shown_through_the_speech_rule_and_talk_is_not(shipped, tmp_path):
    root = tmp_path / "taught"
    takes = []
    for i, (voice, speed) in enumerate([("en", 120), ("en+f3", 150), ("en-us", 100), ("en+m3", 170), ("en-gb", 130)]):
        takes.append(tmp_path / f"moo{i}.wav")
        espeak("mooooo", voice, speed, takes[-1])
    taught.teach("moo", takes, as_="cow", taught_dir=root)
    ear = taught.TaughtEar(shipped, root)
    settings = GateSettings()

    def shown(wave: np.ndarray) -> set:
        """What a fresh gate shows in the windows the app sends (every 0.25 s) as the wave is said after quiet."""
        from offline.evaluate import gated

        stream = np.concatenate([np.zeros(3 * 16000, np.float32), wave, np.zeros(2 * 16000, np.float32)])
        ends = range(N, len(stream) + 1, 4000)
        wins = np.stack([stream[e - N:e] for e in ends])
        heard = ear.listen(wins)
        return set(gated(ear, settings, heard.probs, heard.tags, [audio.rms_dbfs(w) for w in wins],
                         [e / 16000 for e in ends], heard.voiced, heard.taught)) - {None}

    new_voice = espeak("mooooo", "en+f4", 140, tmp_path / "new.wav")
    assert shown(new_voice) == {"cow"}
    talk = espeak("Could you tell me where the station is, please?", "en+f4", 160, tmp_path / "talk.wav")
    assert shown(talk) == set()


def test_a_running_server_hears_a_sound_taught_and_forgotten_within_two_seconds(shipped, tmp_path, address):
    from models.backbones import create_backbone
    from tests.conftest import DREAM_SIZE
    from inference_server.server import DreamSettings, InferenceServer

    root = tmp_path / "taught"
    server = InferenceServer(shipped, create_backbone("efficientnet_lite0", pretrained=False).eval(),
                             tmp_path, address, dream=DreamSettings(size=DREAM_SIZE), context=zmq.Context(),
                             taught_dir=root)
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop.is_set,), daemon=True)
    thread.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    window = in_window(tone(1.2, freq=610.0, lead=0.0))

    def top() -> tuple[str, str | None]:
        sock.send_multipart(protocol.encode(protocol.AUDIO, window, id=1, sample_rate=16000))
        assert sock.poll(20000)
        header, _ = protocol.decode(sock.recv_multipart())
        return header["top"][0][0], header["label"]

    def within(seconds: float, condition) -> float:
        start = time.monotonic()
        while not condition():
            assert time.monotonic() - start < seconds, f"not within {seconds} s"
        return time.monotonic() - start

    try:
        sock.send_multipart(protocol.encode(protocol.HELLO, client="t"))
        assert sock.poll(20000)
        sock.recv_multipart()
        assert top()[0] != "trill"
        takes = examples(tmp_path / "in", 3, seconds=1.2)
        for i, p in enumerate(takes):
            soundfile.write(p, tone(1.2, freq=600.0 + 10 * i), 16000)
        taught.teach("trill", takes, picture(tmp_path / "p.png"), taught_dir=root)
        within(2.0, lambda: top() == ("trill", "trill"))
        # and it is dreamt from its own picture (orange), like any seed
        sock.send_multipart(protocol.encode(protocol.STEER, **{"class": "trill", "intensity": 1.0, "layer": None}))
        sock.send_multipart(protocol.encode(protocol.CREDIT, last_frame=0, window=1))
        while True:
            assert sock.poll(60000)
            header, frame = protocol.decode(sock.recv_multipart())
            if header["kind"] == protocol.FRAME:
                break
        assert header["label"] == "trill"
        r, g, b = frame.reshape(-1, 3).mean(0)
        assert r > g + 60 > b + 90, (r, g, b)
        taught.forget("trill", root)
        within(2.0, lambda: top()[0] != "trill")
    finally:
        stop.set()
        thread.join(timeout=10)
        sock.close()
        ctx.term()
        server.ctx.term()
