"""The app's supervisors: the local server child process, the microphone that comes and goes, the recording
that waits for the server; and the server command, read back by the CLI the child runs."""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from app.capture import MicrophoneError, RingBuffer
from app.cli import main
from app.config import dream_settings, gate_settings, load_settings
from app.supervise import MicrophoneSupervisor, RecordingPlayer, ServerSupervisor, server_command
from common.sound import AudioFileError


def test_the_server_child_gets_the_app_settings_by_name(tmp_path, monkeypatch):
    """The command the app starts its server with, run through the CLI up to where the server would load."""
    import inference_server.server

    seeds, checkpoint = tmp_path / "seeds", tmp_path / "x.pt"
    seeds.mkdir()
    checkpoint.write_bytes(b"")
    venue = tmp_path / "venue.toml"
    venue.write_text(f'dream_size = 96\nmin_confidence = 0.2\nseeds_dir = "{seeds}"\n')
    app_settings = replace(load_settings(venue, mode="toy"), checkpoint=str(checkpoint))
    command = server_command(app_settings, "tcp://127.0.0.1:7000", venue)
    assert command[:4] == [sys.executable, "-m", "app.cli", "serve"]
    served = {}
    monkeypatch.setattr(inference_server.server, "serve",
                        lambda checkpoint, seeds_dir, bind, **options: served.update(options, checkpoint=checkpoint,
                                                                                     seeds_dir=seeds_dir, bind=bind))
    assert main(command[3:]) == 0
    assert (served["bind"], served["checkpoint"], served["seeds_dir"]) == ("tcp://127.0.0.1:7000", str(checkpoint),
                                                                          str(seeds))
    assert (served["gate"], served["dream"]) == (gate_settings(app_settings), dream_settings(app_settings))


def test_the_server_child_is_restarted_when_it_exits_and_stopped_at_the_end():
    server = ServerSupervisor([sys.executable, "-c", "import sys; sys.exit(3)"]).start()
    first = server.process
    assert first.wait(timeout=30) == 3
    server.poll()
    assert server.restarts == 1 and server.process is not first
    server.process.wait(timeout=30)

    sleeper = ServerSupervisor([sys.executable, "-c", "import time; time.sleep(60)"]).start()
    sleeper.poll()
    assert sleeper.restarts == 0  # running: left alone
    sleeper.stop()
    assert sleeper.process.poll() is not None


class FakeMicrophone:
    opened: list = []

    def __init__(self, ring, device):
        if device == "absent":
            raise MicrophoneError("no microphone")
        self.alive, self.stopped = True, False
        FakeMicrophone.opened.append(self)

    def start(self):
        return self

    def stop(self):
        self.stopped = True


def test_the_microphone_is_looked_for_again_after_retry_s_while_absent():
    opens = []

    def absent(ring, device):
        opens.append(device)
        raise MicrophoneError("no microphone")

    mic = MicrophoneSupervisor(RingBuffer(), device=3, retry_s=2.0, open_source=absent)
    for now in (0.0, 0.5, 1.9, 2.0, 3.0, 4.1):
        mic.poll(now)
    assert opens == [3, 3, 3]  # at 0, 2.0 and 4.1
    assert mic.source is None


def test_a_dead_microphone_is_let_go_and_opened_again():
    FakeMicrophone.opened = []
    mic = MicrophoneSupervisor(RingBuffer(), device="usb", retry_s=2.0, open_source=FakeMicrophone)
    mic.poll(0.0)
    first = mic.source
    mic.poll(10.0)
    assert mic.source is first  # alive: nothing to do
    first.alive = False  # unplugged
    mic.poll(10.1)
    assert first.stopped and mic.source is not first and len(FakeMicrophone.opened) == 2
    mic.stop()
    assert mic.source is None and FakeMicrophone.opened[1].stopped


def test_a_recording_waits_for_the_server(tmp_path):
    import soundfile

    path = tmp_path / "tone.wav"
    soundfile.write(path, np.zeros(16000, np.float32), 16000)
    player = RecordingPlayer(RingBuffer(), path, since=0.0)
    try:
        player.poll(1.0, server_ready=False)
        assert not player.source.started
        player.poll(2.0, server_ready=True)
        assert player.source.started
    finally:
        player.stop()


def test_an_unreadable_recording_is_an_error_before_anything_starts(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    with pytest.raises(AudioFileError, match="broken.wav"):
        RecordingPlayer(RingBuffer(), tmp_path / "broken.wav", since=0.0)
