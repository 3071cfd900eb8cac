import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from app.capture import (SAMPLE_RATE, FileSource, MicrophoneError, MicrophoneSource, RingBuffer,
                         list_input_devices, sound_began)
from common.sound import AudioFileError
from tests.conftest import wait_until


def test_ring_buffer_keeps_the_newest_samples_oldest_first():
    ring = RingBuffer(5)
    ring.write(np.arange(3))
    np.testing.assert_array_equal(ring.latest(), [0, 0, 0, 1, 2])
    ring.write(np.arange(3, 7))
    np.testing.assert_array_equal(ring.latest(), [2, 3, 4, 5, 6])
    ring.write(np.arange(10, 20))  # longer than the ring: only the tail survives
    np.testing.assert_array_equal(ring.latest(), [15, 16, 17, 18, 19])
    assert ring.written == 17


def test_a_sound_begins_where_it_rises_out_of_the_second_before_it():
    rng = np.random.default_rng(0)

    def at_dbfs(x, dbfs):
        return (x * 10 ** (dbfs / 20) / np.sqrt(np.mean(x ** 2))).astype(np.float32)

    def tone(seconds, dbfs=-20.0):
        return at_dbfs(np.sin(2 * np.pi * 440 * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE), dbfs)

    silence = np.zeros(3 * SAMPLE_RATE, np.float32)
    hiss = at_dbfs(rng.standard_normal(3 * SAMPLE_RATE), -40.0)
    assert sound_began(np.concatenate([silence, tone(0.03)]))          # a bark's first 30 ms after quiet
    assert sound_began(np.concatenate([hiss, hiss[:800] + tone(0.05)]))  # and out of a room's hiss
    assert not sound_began(silence) and not sound_began(hiss)          # a room never begins
    assert not sound_began(np.concatenate([silence, tone(1.2)]))        # a sound that has gone on for a second
    assert not sound_began(np.concatenate([silence, tone(0.05, -62.0)]))  # too quiet to be anything
    assert not sound_began(np.concatenate([silence, tone(0.2), silence[:800]]))  # one that has ended
    assert not sound_began(tone(0.005))                                 # not enough heard to say


def _tone(path, seconds, rate=SAMPLE_RATE, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


def test_file_source_plays_in_real_time_at_the_model_rate(tmp_path):
    ring = RingBuffer()
    recording = _tone(tmp_path / "a.wav", 3.0, rate=44100)
    started = time.monotonic()
    source = FileSource(ring, recording, loop=False).start()
    # Wall time and audio read together: a late look (a loaded machine) sees more of both, not a wrong pace.
    elapsed, heard = wait_until("a second of playing",
                                lambda: (time.monotonic() - started, ring.written / SAMPLE_RATE),
                                lambda seen: seen[0] >= 1.0)
    assert abs(heard - elapsed) <= 0.3, f"after {elapsed:.2f} s of wall time the ring holds {heard:.2f} s of audio"
    assert source.finished.wait(timeout=5.0)
    assert ring.written == 3 * SAMPLE_RATE  # resampled from 44.1 kHz
    assert abs(np.sqrt(np.mean(ring.latest()[-SAMPLE_RATE:] ** 2)) - 0.5 / np.sqrt(2)) < 0.02


def test_folder_source_plays_every_recording_with_pauses(tmp_path):
    _tone(tmp_path / "1.wav", 0.5)
    _tone(tmp_path / "2.wav", 0.5)
    source = FileSource(RingBuffer(), tmp_path, loop=False)
    assert len(source.samples) == int((0.5 + 2.0) * 2 * SAMPLE_RATE)


@pytest.mark.parametrize("content", [b"", b"not audio at all" * 100])
def test_unreadable_recording_is_a_clear_error_before_anything_plays(tmp_path, content):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(content)
    with pytest.raises(AudioFileError, match="broken.wav: cannot read it as audio"):
        FileSource(RingBuffer(), bad)


def test_a_folder_without_recordings_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no sound here")
    with pytest.raises(AudioFileError, match="no recordings"):
        FileSource(RingBuffer(), tmp_path)


def test_absent_microphone_is_a_clear_error():
    with pytest.raises(MicrophoneError, match="hear-and-see devices"):
        MicrophoneSource(RingBuffer(), device=999)


def _require_pulse_device():
    devices = [d["name"] for d in list_input_devices()]
    if "pulse" not in devices:
        pytest.skip(f"PortAudio has no 'pulse' device here (has {devices}): libasound2-plugins missing")


def _loudest_second(ring: RingBuffer) -> np.ndarray:
    """The loudest second the ring holds (it holds four), in steps of a tenth of a second."""
    samples, step = ring.latest(), SAMPLE_RATE // 10
    starts = range(0, len(samples) - SAMPLE_RATE + 1, step)
    best = max(starts, key=lambda i: np.mean(samples[i:i + SAMPLE_RATE] ** 2))
    return samples[best:best + SAMPLE_RATE]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2)))


def _hears_tone(pulse, tmp_path) -> None:
    ring = RingBuffer()
    mic = MicrophoneSource(ring, device="pulse").start()
    try:
        wait_until("the stream's first samples", lambda: ring.written, timeout=10)  # what plays now is heard
        pulse.play(_tone(tmp_path / "tone.wav", 1.5, rate=48000))  # returns when the sink has played it all
        window = wait_until("the tone in the ring", lambda: _loudest_second(ring), lambda w: _rms(w) > 0.05,
                            timeout=10)
    finally:
        mic.stop()
    assert mic.device_rate > 0
    assert _rms(window) > 0.05, "the tone played to the sink never reached the ring"
    peak_hz = np.argmax(np.abs(np.fft.rfft(window))) * SAMPLE_RATE / len(window)
    assert abs(peak_hz - 440) < 10, f"heard a peak at {peak_hz:.0f} Hz, played 440 Hz"


def test_microphone_hears_what_pulseaudio_plays(pulseaudio, tmp_path):
    """A real-time stream through sounddevice from a PulseAudio null sink's monitor, fed by paplay."""
    _require_pulse_device()
    _hears_tone(pulseaudio, tmp_path)


def test_unplugged_sound_server_is_noticed_and_a_replugged_one_is_heard(pulseaudio, tmp_path):
    _require_pulse_device()
    ring = RingBuffer()
    mic = MicrophoneSource(ring, device="pulse").start()
    playing = subprocess.Popen(["paplay", "--device=hs_null", str(_tone(tmp_path / "long.wav", 30.0))],
                               env=pulseaudio.env)
    wait_until("a second heard", lambda: ring.written, lambda n: n >= SAMPLE_RATE, timeout=10)
    assert mic.alive and ring.written >= SAMPLE_RATE
    pulseaudio.kill()
    playing.kill()
    playing.wait()
    wait_until("the stream to notice its sound server gone", lambda: mic.alive, lambda alive: not alive, timeout=10)
    assert not mic.alive, "the stream still claims to be alive with its sound server gone"
    mic.stop()
    with pytest.raises(MicrophoneError):
        MicrophoneSource(RingBuffer(), device="pulse")
    pulseaudio.start()
    _hears_tone(pulseaudio, tmp_path)
