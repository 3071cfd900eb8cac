"""Taught sounds: the library (teach, list, forget, export, import) and each bad input it must refuse."""
from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from models import taught
from models.taught import TaughtError

SR = 16_000


def tone(seconds: float = 0.8, freq: float = 660.0, level: float = 0.3, sr: int = SR, lead: float = 0.5) -> np.ndarray:
    """A tone with a soft attack and decay, after `lead` s of quiet room noise and before as much again."""
    rng = np.random.default_rng(int(freq))
    t = np.arange(int(seconds * sr)) / sr
    sound = level * np.sin(2 * np.pi * freq * t * (1 + 0.3 * t)) * np.minimum(1, t / 0.02) * np.exp(-t)
    quiet = lambda: 0.0005 * rng.standard_normal(int(lead * sr))  # noqa: E731
    return np.concatenate([quiet(), sound, quiet()]).astype(np.float32)


def wav(path: Path, samples: np.ndarray, sr: int = SR) -> Path:
    soundfile.write(path, samples, sr)
    return path


def examples(folder: Path, n: int = 3, **kw) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [wav(folder / f"take{i}.wav", tone(freq=500 + 40 * i, **kw)) for i in range(n)]


def picture(path: Path, size=(64, 48), fmt: str | None = None) -> Path:
    Image.new("RGB", size, (200, 80, 40)).save(path, format=fmt)
    return path


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_teach_from_files_stores_cut_examples_picture_and_manifest(tmp_path):
    takes = examples(tmp_path / "in", 4)
    takes[0].write_bytes(b"")  # replaced below by one at another rate: every example is stored at 16 kHz
    wav(takes[0], tone(sr=44_100), sr=44_100)
    s = taught.teach("whistle", takes, picture(tmp_path / "p.jpg"), taught_dir=tmp_path / "taught")
    assert s.name == s.shows == "whistle" and s.as_ is None and len(s.examples) == 4
    manifest = json.loads((tmp_path / "taught" / "whistle" / "manifest.json").read_text())
    assert manifest["name"] == "whistle" and manifest["as"] is None and manifest["examples"][0] == "examples/01.wav"
    for p in s.examples:
        data, sr = soundfile.read(p)
        assert sr == SR
        assert 0.8 <= len(data) / SR <= 1.1  # 0.8 s of tone, cut from the quiet around it, with its margins
    assert Image.open(s.picture).format == "PNG" and Image.open(s.picture).size == (64, 48)
    assert [x.name for x in taught.taught_sounds(tmp_path / "taught")] == ["whistle"]
    assert not [p for p in (tmp_path / "taught").iterdir() if p.name.startswith(".")]  # no staging left


def test_a_bundled_seed_as_picture_and_a_sound_taught_as_a_builtin(tmp_path):
    root = tmp_path / "taught"
    s = taught.teach("bell", examples(tmp_path / "a"), "seed:cow", taught_dir=root)
    assert s.picture.is_file() and Image.open(s.picture).size[0] > 8
    moo = taught.teach("moo", examples(tmp_path / "b"), as_="cow", taught_dir=root)
    assert moo.shows == "cow" and moo.picture is None
    assert [x.name for x in taught.taught_sounds(root)] == ["bell", "moo"]
    with pytest.raises(TaughtError, match="leave out the picture"):
        taught.teach("moo2", examples(tmp_path / "c"), "seed:cow", as_="cow", taught_dir=root)
    with pytest.raises(TaughtError, match="not a built-in"):
        taught.teach("moo3", examples(tmp_path / "d"), as_="unicorn", taught_dir=root)
    with pytest.raises(TaughtError, match="seed:nothing"):
        taught.teach("bell2", examples(tmp_path / "e"), "seed:nothing", taught_dir=root)


def test_forget_removes_the_sound_and_only_it(tmp_path):
    root = tmp_path / "taught"
    taught.teach("one", examples(tmp_path / "a"), picture(tmp_path / "p.png"), taught_dir=root)
    taught.teach("two", examples(tmp_path / "b"), picture(tmp_path / "q.png"), taught_dir=root)
    before = taught.signature(root)
    taught.forget("one", root)
    assert [s.name for s in taught.taught_sounds(root)] == ["two"]
    assert taught.signature(root) != before
    assert files_under(root)[0].startswith("two")
    with pytest.raises(TaughtError, match="not a taught sound.*taught: two"):
        taught.forget("one", root)
    with pytest.raises(TaughtError):
        taught.forget("../two", root)
    assert (root / "two").is_dir()


def test_export_import_round_trip(tmp_path):
    src, dst = tmp_path / "here", tmp_path / "there"
    a = taught.teach("flute", examples(tmp_path / "a", 5), picture(tmp_path / "p.webp", fmt="WEBP"), taught_dir=src)
    taught.teach("moo", examples(tmp_path / "b"), as_="cow", taught_dir=src)
    (a.folder / "embeddings.npz").write_bytes(b"a cache stays home")
    assert taught.export_zip(tmp_path / "venue.zip", src) == ["flute", "moo"]
    assert not any("embeddings" in n for n in zipfile.ZipFile(tmp_path / "venue.zip").namelist())
    got = taught.import_zip(tmp_path / "venue.zip", dst)
    assert [(s.name, s.as_, len(s.examples)) for s in got] == [("flute", None, 5), ("moo", "cow", 3)]
    for name in ("flute", "moo"):
        for rel in ("examples/01.wav", "examples/03.wav"):
            assert np.array_equal(soundfile.read(src / name / rel)[0], soundfile.read(dst / name / rel)[0])
    assert np.array_equal(np.asarray(Image.open(src / "flute/picture.png")), np.asarray(Image.open(dst / "flute/picture.png")))
    with pytest.raises(TaughtError, match="already taught here: flute, moo"):
        taught.import_zip(tmp_path / "venue.zip", dst)


@pytest.mark.parametrize("samples, message", [
    (np.zeros(SR, np.float32), "silent"),
    (0.00005 * np.random.default_rng(0).standard_normal(SR).astype(np.float32), "silent"),
    (np.sign(np.sin(2 * np.pi * 200 * np.arange(SR) / SR)).astype(np.float32), "clipped"),
    (tone(seconds=0.12, lead=0.3), "only 0.1"),
    (np.zeros(50, np.float32) + 0.1, "too short"),
])
def test_bad_examples_are_refused_and_nothing_is_stored(tmp_path, samples, message):
    takes = examples(tmp_path / "in")
    wav(takes[1], samples)
    root = tmp_path / "taught"
    with pytest.raises(TaughtError, match=message) as exc:
        taught.teach("chirp", takes, picture(tmp_path / "p.png"), taught_dir=root)
    assert "take1.wav" in str(exc.value)
    assert files_under(root) == []


def test_unreadable_example_and_wrong_counts(tmp_path):
    takes = examples(tmp_path / "in", 4)
    takes[2].write_text("not audio at all")
    root = tmp_path / "taught"
    with pytest.raises(TaughtError, match="take2.wav: cannot read it as audio"):
        taught.teach("chirp", takes, picture(tmp_path / "p.png"), taught_dir=root)
    with pytest.raises(TaughtError, match="2 examples; teach a sound with 3 to 10"):
        taught.teach("chirp", takes[:2], picture(tmp_path / "p.png"), taught_dir=root)
    with pytest.raises(TaughtError, match="no such audio file"):
        taught.teach("chirp", [*takes[:2], tmp_path / "missing.wav"], picture(tmp_path / "p.png"), taught_dir=root)
    assert files_under(root) == []


def test_bad_pictures(tmp_path):
    takes = examples(tmp_path / "in")
    root = tmp_path / "taught"
    good = picture(tmp_path / "good.png", size=(300, 200))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    gif = picture(tmp_path / "anim.gif", fmt="GIF")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(bomb)  # 64 megapixels in a file of a few kB
    assert bomb.stat().st_size < 100_000
    for path, message in [(truncated, "not a readable image"), (text, "not a readable image"),
                          (gif, "GIF image; use a JPEG, PNG or WebP"), (bomb, "more than 40 megapixels"),
                          (tmp_path / "absent.png", "no such file")]:
        with pytest.raises(TaughtError, match=message):
            taught.teach("chirp", takes, path, taught_dir=root)
    with pytest.raises(TaughtError, match="needs a picture"):
        taught.teach("chirp", takes, taught_dir=root)
    assert files_under(root) == []


@pytest.mark.parametrize("name", ["a/b", "../up", "Moo", "mo o", "", "x" * 33, "1st", "déjà", "dog", "speech",
                                  "a\\b", ".hidden"])
def test_bad_names(tmp_path, name):
    with pytest.raises(TaughtError):
        taught.teach(name, examples(tmp_path / "in"), picture(tmp_path / "p.png"), taught_dir=tmp_path / "taught")
    assert files_under(tmp_path / "taught") == []


def test_a_name_taught_twice_is_refused(tmp_path):
    root = tmp_path / "taught"
    taught.teach("ding", examples(tmp_path / "a"), picture(tmp_path / "p.png"), taught_dir=root)
    with pytest.raises(TaughtError, match="already taught"):
        taught.teach("ding", examples(tmp_path / "b"), picture(tmp_path / "p.png"), taught_dir=root)


def _zip_with(tmp_path: Path, members: dict, link: str | None = None) -> Path:
    path = tmp_path / "from_elsewhere.zip"
    good = taught.teach("good", examples(tmp_path / "in"), picture(tmp_path / "p.png"), taught_dir=tmp_path / "src")
    with zipfile.ZipFile(path, "w") as z:
        for f in [good.folder / "manifest.json", *good.examples, good.picture]:
            z.write(f, f"good/{f.relative_to(good.folder).as_posix()}")
        for name, data in members.items():
            z.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("members, link, message", [
    ({"../evil/manifest.json": "{}"}, None, "refusing member '../evil/manifest.json'"),
    ({"good/../../evil.wav": "x"}, None, "refusing member"),
    ({"/etc/cron.d/evil": "x"}, None, "refusing member '/etc/cron.d/evil'"),
    ({"good\\..\\..\\evil": "x"}, None, "refusing member"),
    ({}, "good/examples/04.wav", "not a plain file"),
    ({"good/run.sh": "#!/bin/sh"}, None, "not a file a taught sound has"),
    ({"Bad Name/manifest.json": "{}"}, None, "not a name for a taught sound"),
])
def test_zip_slip_and_strange_members_are_refused(tmp_path, members, link, message):
    path = _zip_with(tmp_path, members, link)
    dst = tmp_path / "venue"
    with pytest.raises(TaughtError, match=message.replace("(", r"\(")):
        taught.import_zip(path, dst)
    assert files_under(dst) == [] and not (tmp_path / "evil").exists()


def test_oversized_member_and_not_a_zip(tmp_path, monkeypatch):
    monkeypatch.setattr(taught, "MAX_ZIP_MEMBER_BYTES", 1000)
    path = _zip_with(tmp_path, {})
    with pytest.raises(TaughtError, match="too large"):
        taught.import_zip(path, tmp_path / "venue")
    (tmp_path / "x.zip").write_text("nope")
    with pytest.raises(TaughtError, match="not a readable zip"):
        taught.import_zip(tmp_path / "x.zip", tmp_path / "venue")
    assert files_under(tmp_path / "venue") == []


def test_a_bad_sound_in_a_zip_imports_nothing(tmp_path):
    path = _zip_with(tmp_path, {"quiet/manifest.json": json.dumps(dict(
        name="quiet", examples=["examples/01.wav", "examples/02.wav", "examples/03.wav"], picture=None, **{"as": "cow"})),
        **{f"quiet/examples/0{i}.wav": b"" for i in (1, 2, 3)}})
    with zipfile.ZipFile(path, "a") as z:
        for i in (1, 2, 3):
            buf = tmp_path / f"s{i}.wav"
            wav(buf, np.zeros(SR, np.float32))
            z.write(buf, f"quiet/examples/0{i}.wav")
    with pytest.raises(TaughtError):
        taught.import_zip(path, tmp_path / "venue")
    assert taught.taught_sounds(tmp_path / "venue") == []


def test_default_folder_follows_xdg(monkeypatch, tmp_path):
    from common.paths import default_taught_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_taught_dir() == tmp_path / "hear-and-see" / "taught"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_taught_dir() == Path.home() / ".local/share/hear-and-see/taught"


def test_an_example_is_heard_in_the_windows_the_app_sends_of_it():
    sr = 16000
    sound = np.ones(int(1.2 * sr), np.float32)  # 1.2 s of sound, cut to start at its onset
    wins = taught.example_windows(sound)
    assert wins.shape == (len(taught.EXAMPLE_LOOKS_S) + len(taught.EXAMPLE_TAILS_S), 4 * sr)
    for win, look in zip(wins, taught.EXAMPLE_LOOKS_S):  # the sound so far, at the end of a window of silence
        heard = int((look + taught.CUT_MARGIN_SECONDS) * sr)
        assert win[-heard:].all() and not win[:-heard].any()
    for win, tail in zip(wins[len(taught.EXAMPLE_LOOKS_S):], taught.EXAMPLE_TAILS_S):  # the whole, then silence
        after = int(tail * sr)
        assert not win[-after:].any() and win[-after - len(sound):-after].all()
        assert not win[:-after - len(sound)].any()
