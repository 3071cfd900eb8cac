"""What a headless run leaves behind, and that keeping it never holds up the show."""
import json
import threading

import numpy as np
from PIL import Image

from app import recording
from app.recording import Recorder


class SlowDisk:
    """A display whose PNGs are written only when the test lets them."""

    def __init__(self):
        self.may_write = threading.Event()
        self.written = []

    def read_pixels(self):
        return np.full((18, 32, 3), 90, np.uint8)

    def save_png(self, pixels, path):
        assert self.may_write.wait(10), "the test never let the write happen"
        Image.fromarray(pixels).save(path)
        self.written.append(path)


def test_a_slow_disk_does_not_hold_up_the_loop(tmp_path):
    disk, recorder = SlowDisk(), Recorder(tmp_path, None)
    recorder.frame(0.0, "seed", None, disk)  # returns while its PNG is still waiting for the disk
    assert not disk.written
    disk.may_write.set()
    report = recorder.close()
    assert [p.name for p in disk.written] == ["00000.png"]
    assert (tmp_path / "contact_sheet.png").exists()
    assert json.loads((tmp_path / "timeline.json").read_text())["frames_drawn"] == report.frames_drawn == 1


def test_frames_are_skipped_not_queued_when_the_disk_falls_behind(tmp_path):
    disk, recorder = SlowDisk(), Recorder(tmp_path, None)
    due = recording.MAX_UNWRITTEN_FRAMES + 3
    for i in range(due):
        recorder.frame(i / recording.SAVED_FRAMES_PER_SECOND, "live", "dog", disk)
    assert recorder.unsaved == 3
    disk.may_write.set()
    report = recorder.close()
    assert sorted(p.name for p in disk.written) == [f"{i:05d}.png" for i in range(recording.MAX_UNWRITTEN_FRAMES)]
    assert report.frames_drawn == due and report.frames_by_source == {"live": due}


def test_a_full_disk_loses_frames_not_the_run(tmp_path):
    class FullDisk(SlowDisk):
        def save_png(self, pixels, path):
            raise OSError(28, "No space left on device")

    recorder = Recorder(tmp_path, None)
    recorder.frame(0.0, "seed", None, FullDisk())
    recorder.label(0.1, "dog", 0.9)
    report = recorder.close()
    assert recorder.unsaved == 1 and not recorder.saved
    assert json.loads((tmp_path / "timeline.json").read_text())["labels"] == [[0.1, "dog", 0.9]]
    assert report.frames_drawn == 1
