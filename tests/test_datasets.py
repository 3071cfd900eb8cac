"""Dataset layouts, grouped folds, the decode cache and corrupt files, on tiny generated data."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from models import audio
from offline import datasets
from tests.conftest import SHARED
from tests.synth_sounds import CLASSES, make_esc50, make_folder, make_urbansound8k



@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEAR_AND_SEE_CACHE", str(tmp_path / "cache"))
    datasets._MEMORY.clear()


def test_esc50_layout(tmp_path):
    root = make_esc50(tmp_path / "esc50")
    ds = datasets.load_dataset(root, progress=False)
    assert ds.class_names == CLASSES
    assert len(ds) == 16 and sorted(set(ds.folds.tolist())) == [1, 2, 3, 4]
    assert all(len(w) == 5 * audio.SAMPLE_RATE and w.dtype == np.float32 for w in ds.waveforms)
    train, test = ds.fold_split([4])
    assert len(train) == 12 and len(test) == 4 and set(test.folds.tolist()) == {4}
    assert not set(train.paths) & set(test.paths)


def test_esc50_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HEAR_AND_SEE_ESC50", str(tmp_path / "x"))
    assert datasets.esc50_dir() == tmp_path / "x"
    monkeypatch.delenv("HEAR_AND_SEE_ESC50")
    assert datasets.esc50_dir() == SHARED / "data" / "esc50"


def test_urbansound8k_layout(tmp_path):
    root = make_urbansound8k(tmp_path / "us8k")
    assert datasets.detect_layout(root) == "urbansound8k"
    ds = datasets.load_dataset(root, progress=False)
    assert ds.class_names == CLASSES and len(ds) == 8
    assert sorted(set(ds.folds.tolist())) == [1, 2]
    # a 2.5 s slice becomes one zero-padded 4 s window
    assert datasets.windows(ds.waveforms[0]).shape == (1, audio.N_SAMPLES)


def test_folder_grouped_split_keeps_recordings_together(tmp_path):
    root = make_folder(tmp_path / "venue")
    ds = datasets.load_dataset(root, layout="folder", group_pattern=r"^(.+)_\d+$", progress=False)
    assert ds.class_names == sorted(CLASSES) and len(ds) == 30
    fold_of_group = {}
    for g, f in zip(ds.groups, ds.folds):
        assert fold_of_group.setdefault(g, f) == f, f"recording {g} straddles folds"
    # every fold holds one recording of each class (5 recordings per class, 5 folds)
    for f in range(1, datasets.FOLDER_FOLDS + 1):
        assert sorted(ds.labels[ds.folds == f].tolist()) == [0, 0, 0, 1, 1, 1]


def test_folder_without_groups_warns_about_leaks(tmp_path, caplog):
    root = make_folder(tmp_path / "venue", recordings_per_class=2)
    with caplog.at_level(logging.WARNING):
        ds = datasets.load_dataset(root, progress=False)
    assert "optimistic" in caplog.text
    assert len(ds) == 12


def test_corrupt_file_is_skipped_counted_and_named(tmp_path):
    root = make_esc50(tmp_path / "esc50", folds=(1, 2), per_class_per_fold=1)
    bad = sorted((root / "audio").glob("*.flac"))[0]
    bad.write_bytes(b"this is not audio at all")
    ds = datasets.load_dataset(root, progress=False)
    assert len(ds) == 3
    assert [p for p, _ in ds.skipped] == [str(bad)]
    assert bad.name in ds.summary() and "skipped 1 file" in ds.summary()


def test_decode_cache_round_trip(tmp_path):
    root = make_esc50(tmp_path / "esc50", folds=(1,), per_class_per_fold=2)
    first = datasets.load_dataset(root, progress=False)
    cached = list((tmp_path / "cache" / "waveforms").glob("*.npz"))
    assert len(cached) == 1
    datasets._MEMORY.clear()
    again = datasets.load_dataset(root, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(first.waveforms, again.waveforms))
    # touching a file changes the key: the cache is never stale
    p = Path(first.paths[0])
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    datasets._MEMORY.clear()
    datasets.load_dataset(root, progress=False)
    assert len(list((tmp_path / "cache" / "waveforms").glob("*.npz"))) == 2


def test_random_split_is_the_leaky_one(tmp_path):
    root = make_esc50(tmp_path / "esc50")
    ds = datasets.load_dataset(root, progress=False)
    train, test = ds.random_split(0.25, seed=0)
    assert len(train) + len(test) == len(ds) and len(test) == 4
    assert not set(train.paths) & set(test.paths)


@pytest.mark.parametrize("seconds, expected", [(3.0, [0]), (4.0, [0]), (5.0, [0, 8000, 16000]),
                                               (5.2, [0, 8000, 16000, 19200])])
def test_windows_cover_the_whole_recording(seconds, expected):
    n = int(seconds * audio.SAMPLE_RATE)
    wave = np.arange(n, dtype=np.float32)
    w = datasets.windows(wave, hop_seconds=0.5)
    assert w.shape == (len(expected), audio.N_SAMPLES)
    assert [int(x[0]) for x in w] == expected
    if n > audio.N_SAMPLES:
        assert w[-1][-1] == n - 1  # flush with the end


def test_real_esc50_layout_if_present():
    root = Path(os.environ.get("HEAR_AND_SEE_ESC50", SHARED / "data" / "esc50"))
    if not (root / "esc50.csv").is_file():
        pytest.skip(f"ESC-50 not found at {root} (set HEAR_AND_SEE_ESC50)")
    entries, names = datasets.read_esc50(root)
    assert len(names) == 50 and names[0] == "dog"
    assert {e[2] for e in entries} <= {1, 2, 3, 4, 5}
    # clips of one source recording and class share a fold: that is what makes the folds honest (two
    # freesound recordings gave clips to two classes each, clock_alarm/clock_tick and hen/rooster, and
    # those do sit in different folds)
    fold_of = {}
    for _, label, fold, group in entries:
        assert fold_of.setdefault((group, label), fold) == fold
