"""The one decoder (common/sound.py): every recording the project reads becomes mono float32 at 16 kHz here."""
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from common.sound import SAMPLE_RATE, AudioFileError, load_audio
from tests.conftest import REPO_ROOT


def _tone(seconds, rate, freq=440.0, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _peak_hz(wave, rate):
    return np.argmax(np.abs(np.fft.rfft(wave))) * rate / len(wave)


def test_a_recording_at_the_project_rate_comes_back_sample_for_sample(tmp_path):
    wave = _tone(1.0, SAMPLE_RATE)
    sf.write(tmp_path / "a.wav", wave, SAMPLE_RATE, subtype="FLOAT")
    decoded = load_audio(tmp_path / "a.wav")
    assert decoded.dtype == np.float32 and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, wave)


@pytest.mark.parametrize("suffix, rate", [(".ogg", 22050), (".flac", 44100), (".wav", 48000)])
def test_stereo_at_any_rate_becomes_the_mean_of_its_channels_at_16_khz(tmp_path, suffix, rate):
    left = _tone(1.5, rate, freq=440.0)
    path = tmp_path / f"stereo{suffix}"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), rate)  # the tone in one ear only
    decoded = load_audio(path)
    assert len(decoded) == math.ceil(len(left) * SAMPLE_RATE / rate)  # librosa.load's length, which the cache holds
    assert abs(_peak_hz(decoded, SAMPLE_RATE) - 440.0) < 2.0
    middle = decoded[SAMPLE_RATE // 4:-SAMPLE_RATE // 4]
    assert abs(np.sqrt(np.mean(middle ** 2)) - 0.25 / np.sqrt(2)) < 0.01  # half the tone: the mean of the two


def test_the_demo_mp3s_decode_with_soundfile_alone():
    # mp3 through libsndfile: librosa's decoders, and the audioread fallback whose imports warn in every log,
    # never load. The model side decodes with this same function.
    import models.audio

    assert models.audio.load_audio is load_audio
    probe = ("import sys; from pathlib import Path; from common.sound import load_audio; "
             "lengths = [len(load_audio(p)) for p in sorted(Path('app/demo_audio').glob('*.mp3'))]; "
             "print(len(lengths), min(lengths), sorted(m for m in ('audioread', 'librosa') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", probe], capture_output=True,
                         text=True, check=True, cwd=REPO_ROOT)
    count, shortest, loaded = out.stdout.split(maxsplit=2)
    assert int(count) == len(list((REPO_ROOT / "app/demo_audio").glob("*.mp3"))) >= 7
    assert int(shortest) > 0.5 * SAMPLE_RATE and loaded.strip() == "[]"


@pytest.mark.parametrize("make, problem", [
    (lambda p: None, "no such audio file"),
    (lambda p: p.write_bytes(b""), "cannot read it as audio"),
    (lambda p: p.write_bytes(b"RIFF not really a wave" * 50), "cannot read it as audio"),
    (lambda p: p.mkdir(), "no such audio file"),
    (lambda p: sf.write(p, np.zeros((0, 1), np.float32), SAMPLE_RATE), "empty or non-finite audio"),
    (lambda p: sf.write(p, np.array([0.0, np.nan, 0.0], np.float32), SAMPLE_RATE, subtype="FLOAT"),
     "empty or non-finite audio"),
])
def test_a_bad_recording_is_one_error_naming_the_file_and_the_problem(tmp_path, make, problem):
    path = tmp_path / "broken.wav"
    make(path)
    with pytest.raises(AudioFileError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {problem}") and "\n" not in message
