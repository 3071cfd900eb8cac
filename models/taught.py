"""Taught sounds: a venue's own sounds, each a name, 3 to 10 example recordings and a picture.

A venue's taught sounds live in one folder (`taught_dir`, default common.paths.default_taught_dir()), one folder
per sound:

    <taught_dir>/<name>/manifest.json     name, "as" (a built-in class it shows, or null), created, examples, picture
    <taught_dir>/<name>/examples/01.wav   each example cut to its sound, 16 kHz mono: a new ear can learn them again
    <taught_dir>/<name>/picture.png       what the dream starts from (none for a sound taught `as` a built-in)
    <taught_dir>/<name>/embeddings.npz    what the ear made of the examples, kept while the ear's weights are the same

This module loads torch only to hear (TaughtEar): teaching, listing and forgetting need none, so the app's side (the
command line before the microphone records, and the console) checks a name, a take or a picture with it, and the
child process that stores a sound for them starts quickly. Nothing is stored half-way: a sound is written to a hidden
folder beside the others and renamed into place, and forgotten by renaming it out of the way before it is deleted.
Every way in (files, the microphone's takes, the console, a zip) goes through `teach`, so every example and picture
is checked by one set of rules.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.levels import frame_db
from common.paths import default_taught_dir
from common.sound import SAMPLE_RATE, WINDOW_SAMPLES, AudioFileError, load_audio

MIN_EXAMPLES, MAX_EXAMPLES = 3, 10
NAME_RULE = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # a folder name on every system, and a word on the screen
SILENT_DBFS = -50.0        # an example whose loudest 10 ms is quieter than this has no sound in it
CLIPPED_LEVEL = 0.999      # a sample this close to full scale is clipped ...
CLIPPED_SHARE = 0.001      # ... and an example with this share of them (or 3 in a row) was recorded too loud
MIN_SOUND_SECONDS = 0.3
MAX_EXAMPLE_SECONDS = 30.0  # a longer file is not one example of a sound
CUT_BELOW_PEAK_DB = 30.0   # an example's sound: from the first to the last 10 ms within this many dB of its loudest
CUT_MARGIN_SECONDS = 0.1   # kept before and after it
PICTURE_FORMATS = ("JPEG", "PNG", "WEBP")
MAX_PICTURE_PIXELS = 40_000_000  # a larger picture is refused before it is decoded (a decompression bomb)
PICTURE_LONG_SIDE = 1920   # a picture is stored no larger: the dream is 720 lines at most
MAX_ZIP_MEMBER_BYTES = 20_000_000
MAX_ZIP_BYTES = 400_000_000
SEED_PREFIX = "seed:"


class TaughtError(UserError, ValueError):
    """A taught sound, example, picture or zip that cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class TaughtSound:
    name: str
    folder: Path
    shows: str                 # the label the installation shows: `as_` when it has one, else `name`
    as_: str | None
    examples: tuple[Path, ...]
    picture: Path | None
    created: str


def builtin_classes() -> set[str]:
    """The names a taught sound may show with `as_` and may not take for its own."""
    from models.classes import AUDIOSET_CLASSES, ESC50_CLASSES

    return set(ESC50_CLASSES) | set(AUDIOSET_CLASSES)


def check_name(name: str, builtins=()) -> str:
    """The one rule for a taught sound's name: lower-case letters, digits, '_' and '-', a letter first, at most
    32 characters, and not a built-in class's name (reuse one on purpose with `as_`)."""
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise TaughtError(f"{name!r} is not a name for a taught sound: use lower-case letters, digits, '_' or '-', "
                          f"starting with a letter, at most 32 characters (e.g. 'moo' or 'flute_a')")
    if name in builtins or name == "speech":
        raise TaughtError(f"{name!r} is a built-in class: choose another name, or teach it as that class "
                          f"(`--as {name}` with a name of its own)")
    return name


# ---------------------------------------------------------------------------------------------------------
# examples

def cut_to_sound(wave: np.ndarray, where: str = "example") -> np.ndarray:
    """Check one example (16 kHz mono) and cut it to its sound, as the ear's onset rule reads it: from the first to
    the last 10 ms within CUT_BELOW_PEAK_DB of its loudest, with a margin, at most one 4 s window."""
    sr, frame = SAMPLE_RATE, SAMPLE_RATE // 100
    if len(wave) > MAX_EXAMPLE_SECONDS * sr:
        raise TaughtError(f"{where}: {len(wave) / sr:.0f} s long; an example is one sound, cut it to under "
                          f"{MAX_EXAMPLE_SECONDS:.0f} s")
    if len(wave) < frame:
        raise TaughtError(f"{where}: too short ({len(wave) / sr:.3f} s); an example needs at least "
                          f"{MIN_SOUND_SECONDS} s of sound")
    db = frame_db(wave, frame)
    if db.max() < SILENT_DBFS:
        raise TaughtError(f"{where}: silent (its loudest moment is {db.max():.0f} dBFS); record it closer or louder")
    at_full_scale = np.abs(wave) >= CLIPPED_LEVEL
    runs = np.convolve(at_full_scale.astype(np.int8), np.ones(3, np.int8), "valid").max(initial=0) >= 3
    if runs or at_full_scale.mean() > CLIPPED_SHARE:
        raise TaughtError(f"{where}: clipped ({int(at_full_scale.sum())} samples at full scale); record it again "
                          f"quieter or further away")
    loud = np.flatnonzero(db >= db.max() - CUT_BELOW_PEAK_DB)
    first, last = int(loud[0]), int(loud[-1]) + 1
    if (last - first) * frame < MIN_SOUND_SECONDS * sr:
        raise TaughtError(f"{where}: only {(last - first) / 100:.2f} s of sound; an example needs at least "
                          f"{MIN_SOUND_SECONDS} s")
    margin = int(CUT_MARGIN_SECONDS * sr)
    start = max(0, first * frame - margin)
    return wave[start:min(len(wave), last * frame + margin, start + WINDOW_SAMPLES)].astype(np.float32)


def read_example(path: str | Path) -> np.ndarray:
    try:
        wave = load_audio(path)
    except AudioFileError as exc:
        raise TaughtError(f"example {exc}") from None
    return cut_to_sound(wave, f"example {path}")


# ---------------------------------------------------------------------------------------------------------
# pictures

def seed_picture(spec: str) -> Path:
    """'seed:cow' -> the bundled seed picture of class cow (models.seeds' rule)."""

    from models.seeds import SeedImageError, seed_image_path

    try:
        return seed_image_path(spec[len(SEED_PREFIX):])
    except SeedImageError as exc:
        raise TaughtError(f"picture {spec}: {exc}") from None


def read_picture(path: str | Path, where: str | None = None):
    """A JPEG, PNG or WebP file as a PIL RGB image no longer than PICTURE_LONG_SIDE; anything else (not an image,
    another format, truncated, or so large it would take the machine's memory to decode) is a TaughtError, which
    names the picture as `where` (default: its path)."""
    from PIL import Image, ImageOps

    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise TaughtError(f"picture {where}: no such file")
    try:
        with Image.open(path) as im:
            if im.format not in PICTURE_FORMATS:
                raise TaughtError(f"picture {where}: a {im.format} image; use a JPEG, PNG or WebP picture")
            width, height = im.size
            if width * height > MAX_PICTURE_PIXELS:  # read from the header: nothing decoded yet
                raise TaughtError(f"picture {where}: {width}x{height} pixels is more than "
                                  f"{MAX_PICTURE_PIXELS // 1_000_000} megapixels; make it smaller")
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
            im = im.convert("RGB")
    except TaughtError:
        raise
    except Image.DecompressionBombError as exc:
        raise TaughtError(f"picture {where}: too many pixels to decode safely ({exc})") from None
    except Exception as exc:  # PIL raises many types for a broken file (UnidentifiedImageError, OSError ...)
        raise TaughtError(f"picture {where}: not a readable image ({type(exc).__name__}: {exc})") from None
    if min(im.size) < 8:
        raise TaughtError(f"picture {where}: too small ({im.size[0]}x{im.size[1]})")
    im.thumbnail((PICTURE_LONG_SIDE, PICTURE_LONG_SIDE))
    return im


# ---------------------------------------------------------------------------------------------------------
# the folder

def taught_folder(taught_dir: str | Path | None = None) -> Path:
    return Path(taught_dir) if taught_dir is not None else default_taught_dir()


def teach(name: str, examples: list, picture: str | Path | None = None, as_: str | None = None,
          taught_dir: str | Path | None = None, builtins=None) -> TaughtSound:
    """Store a taught sound. `examples`: 3-10 audio files (or 16 kHz arrays: the microphone's takes), each checked
    and cut to its sound; `picture`: a JPEG/PNG/WebP file or 'seed:CLASS'; `as_`: a built-in class the sound shows
    (its picture is then that class's, and `picture` must be left out). `builtins`: the classes a taught sound's
    name may not take (default: ESC-50's)."""
    builtins = builtin_classes() if builtins is None else set(builtins)
    check_name(name, builtins)
    if as_ is not None and as_ not in builtins:
        raise TaughtError(f"--as {as_}: not a built-in class; use one of {', '.join(sorted(builtins))}")
    if as_ is not None and picture is not None:
        raise TaughtError(f"{name}: a sound taught as {as_!r} shows {as_}'s picture; leave out the picture")
    if as_ is None and picture is None:
        raise TaughtError(f"{name}: needs a picture (a JPEG/PNG/WebP file, or seed:CLASS for a bundled one)")
    if not MIN_EXAMPLES <= len(examples) <= MAX_EXAMPLES:
        raise TaughtError(f"{name}: {len(examples)} examples; teach a sound with {MIN_EXAMPLES} to {MAX_EXAMPLES}")
    root = taught_folder(taught_dir)
    if (root / name).exists():
        raise TaughtError(f"{name}: already taught in {root}; forget it first (`teach --forget {name}`)")
    sounds = [read_example(e) if not isinstance(e, np.ndarray) else cut_to_sound(e, f"example {i + 1}")
              for i, e in enumerate(examples)]
    source = str(picture) if picture is not None else None
    image = None
    if picture is not None:
        image = read_picture(seed_picture(str(picture)) if str(picture).startswith(SEED_PREFIX) else picture)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".teaching-{name}-", dir=root))
    try:
        import soundfile

        (staging / "examples").mkdir()
        names = []
        for i, sound in enumerate(sounds, 1):
            names.append(f"examples/{i:02d}.wav")
            soundfile.write(staging / names[-1], sound, SAMPLE_RATE, subtype="PCM_16")
        if image is not None:
            image.save(staging / "picture.png")
        manifest = dict(name=name, **{"as": as_}, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), examples=names,
                        picture="picture.png" if image is not None else None,
                        picture_from=None if source is None or not source.startswith(SEED_PREFIX) else source)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        os.chmod(staging, 0o755)
        os.rename(staging, root / name)  # atomic; refuses if another process taught the name meanwhile
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise TaughtError(f"{name}: could not store it in {root} ({exc})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return read_sound(root / name)


def read_sound(folder: Path) -> TaughtSound:
    """One stored sound, from its manifest; TaughtError names what is wrong with a damaged one."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        examples = tuple(folder / e for e in manifest["examples"])
        picture = folder / manifest["picture"] if manifest.get("picture") else None
        name, as_ = manifest["name"], manifest.get("as")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TaughtError(f"{folder}: not a taught sound ({type(exc).__name__}: {exc})") from None
    if name != folder.name or not all(p.is_file() for p in examples) or (picture is None and as_ is None):
        raise TaughtError(f"{folder}: damaged (its manifest does not match its files); forget it and teach it again")
    return TaughtSound(name=name, folder=folder, shows=as_ or name, as_=as_, examples=examples, picture=picture,
                       created=manifest.get("created", ""))


def taught_sounds(taught_dir: str | Path | None = None, errors: list | None = None) -> list[TaughtSound]:
    """The venue's taught sounds in name order. A damaged one is left out (and its error appended to `errors`)."""
    root = taught_folder(taught_dir)
    if not root.is_dir():
        return []
    sounds = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            sounds.append(read_sound(folder))
        except TaughtError as exc:
            if errors is not None:
                errors.append(str(exc))
    return sounds


def signature(taught_dir: str | Path | None = None) -> tuple:
    """A cheap fingerprint of what is taught (a stat of the folder and of each manifest): it changes when a sound is
    taught, forgotten or imported, and not when the ear writes its cache."""
    root = taught_folder(taught_dir)
    try:
        entries = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return ()
    out = []
    for name in entries:
        try:
            st = os.stat(root / name / "manifest.json")
            out.append((name, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            continue
    return tuple(out)


def forget(name: str, taught_dir: str | Path | None = None) -> None:
    root = taught_folder(taught_dir)
    folder = root / name
    if not NAME_RULE.fullmatch(name or "") or not (folder / "manifest.json").is_file():
        known = ", ".join(s.name for s in taught_sounds(root)) or "none"
        raise TaughtError(f"{name!r} is not a taught sound in {root} (taught: {known})")
    gone = Path(tempfile.mkdtemp(prefix=f".forgetting-{name}-", dir=root))
    os.rename(folder, gone / name)  # out of sight at once; the files go after
    shutil.rmtree(gone, ignore_errors=True)


def export_zip(path: str | Path, taught_dir: str | Path | None = None, names: list[str] | None = None) -> list[str]:
    """Write the taught sounds (all, or `names`) to a zip: each one's manifest, examples and picture."""
    sounds = taught_sounds(taught_dir)
    if names is not None:
        unknown = sorted(set(names) - {s.name for s in sounds})
        if unknown:
            raise TaughtError(f"not taught: {', '.join(unknown)}")
        sounds = [s for s in sounds if s.name in names]
    if not sounds:
        raise TaughtError(f"nothing taught in {taught_folder(taught_dir)} to export")
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        for s in sounds:
            for f in [s.folder / "manifest.json", *s.examples, *([s.picture] if s.picture else [])]:
                z.write(f, f"{s.name}/{f.relative_to(s.folder).as_posix()}")
    os.replace(partial, path)
    return [s.name for s in sounds]


def _member_path(info: zipfile.ZipInfo, where: Path) -> tuple[str, str]:
    """(sound, path inside it) of one zip member, or a TaughtError for anything that is not a plain file of the
    layout export_zip writes: absolute paths, '..', backslashes, links, oversized members."""
    name = info.filename
    mode = info.external_attr >> 16
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or ":" in name or any(p in ("", ".", "..") for p in parts)
            or len(parts) not in (2, 3)):
        raise TaughtError(f"{where}: refusing member {name!r}: not a path of a taught sound (<name>/<file>)")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: written by a tool that records no file type
        raise TaughtError(f"{where}: refusing member {name!r}: not a plain file (a link or a device)")
    if info.file_size > MAX_ZIP_MEMBER_BYTES:
        raise TaughtError(f"{where}: refusing member {name!r}: {info.file_size} bytes is too large for a taught sound")
    inner = "/".join(parts[1:])
    if not (inner in ("manifest.json", "picture.png") or re.fullmatch(r"examples/\d{2}\.wav", inner)):
        raise TaughtError(f"{where}: refusing member {name!r}: not a file a taught sound has")
    return parts[0], inner


def import_zip(path: str | Path, taught_dir: str | Path | None = None) -> list[TaughtSound]:
    """Teach every sound in a zip written by export_zip, each checked as if taught from files (name, examples,
    picture); all or nothing: a sound already taught, or any bad member, stores none of them."""
    path = Path(path)
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise TaughtError(f"{path}: not a readable zip ({exc})") from None
    with z, tempfile.TemporaryDirectory(prefix="hear-and-see-import-") as tmp:
        members = z.infolist()
        if sum(i.file_size for i in members) > MAX_ZIP_BYTES:
            raise TaughtError(f"{path}: {sum(i.file_size for i in members)} bytes unpacked is too large")
        layout: dict[str, list] = {}
        for info in members:
            if info.is_dir():
                continue
            sound, inner = _member_path(info, path)
            check_name(sound, builtins=())
            layout.setdefault(sound, []).append((info, inner))
        if not layout:
            raise TaughtError(f"{path}: no taught sounds in it")
        root = taught_folder(taught_dir)
        clash = sorted(s for s in layout if (root / s).exists())
        if clash:
            raise TaughtError(f"{path}: already taught here: {', '.join(clash)}; forget them first")
        plans = []
        for sound, files in layout.items():
            folder = Path(tmp) / sound
            for info, inner in files:
                (folder / inner).parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(folder / inner, "wb") as dst:  # zipfile stops at the stated size
                    shutil.copyfileobj(src, dst, 1 << 20)
            try:
                manifest = json.loads((folder / "manifest.json").read_text())
                examples = [folder / e for e in manifest["examples"]]
                picture = folder / manifest["picture"] if manifest.get("picture") else None
                as_ = manifest.get("as")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise TaughtError(f"{path}: {sound}/manifest.json is not a taught sound's manifest ({exc})") from None
            if manifest.get("name") != sound or any(not e.is_file() or e.parent.parent != folder for e in examples):
                raise TaughtError(f"{path}: {sound}/manifest.json does not match the files beside it")
            plans.append((sound, examples, picture, as_))
        taught = []
        try:
            for sound, examples, picture, as_ in plans:
                taught.append(teach(sound, examples, picture, as_, taught_dir))
        except BaseException:
            for s in taught:  # all or nothing
                forget(s.name, taught_dir)
            raise
        return taught


# ---------------------------------------------------------------------------------------------------------
# hearing them: a few-shot head on the embedding the classifier already computes

# The head (chosen on ESC-50 folds 1-3 with ten classes left out and taught from five examples each, scored on fold 4:
# BENCHMARKS.md, "Taught sounds"): a regularised logistic probe over the frozen member's embedding, one row per taught
# sound and one for talk, fitted beside that member's own 50 logits held fixed, on the taught examples against a few
# embeddings of each built-in class and of people talking (NEGATIVES, made from ESC-50's training folds and espeak-ng
# sentences by benchmarks/teach_bench.py). So a taught sound, talk and the 50 compete in one softmax on one scale: the
# taught sounds' share of it is theirs, talk's is no class's (a word taught in a voice is told from talk in general),
# and the built-in classes share the rest in the proportions the whole classifier gives them. A taught sound's logit
# also gains NEAR_WEIGHT per unit of cosine between the window and the sound's nearest example (the examples are few:
# the probe alone under-trusts a window very like one of them), and SHIFT favours the taught sounds: a visitor taught
# them to be seen (both tuned so that the known classes lose at most 1.5 points, measured).
PROBE_L2 = 3e-4
PROBE_ITERATIONS = 100
NEAR_WEIGHT = 8.0
SHIFT = 5.0         # at an example itself (cosine 1); NEAR_WEIGHT less per unit of cosine farther
NEGATIVES = Path(__file__).parent / "weights" / "taught_negatives.npz"
NEAR_COSINE = 0.94  # a taught sound made with a voice passes the speech rule only this near one of its examples
EXAMPLE_LOOKS_S = (0.5, 1.0)  # an example is heard as the app sends a sound: windows ending this long after
EXAMPLE_TAILS_S = (0.5, 1.5, 2.5)  # its onset (silence before), and the whole of it this long before a window's
# end, as it travels through the windows sent every hop (BENCHMARKS.md, "Taught sounds": how the head was chosen)
RECHECK_S = 0.25     # how often the ear looks at the folder (a stat per sound): a new sound is heard within 2 s


def example_windows(sound: np.ndarray) -> np.ndarray:
    """A cut example (its sound from the start) -> the 4 s windows the app would send of it: silence before, the
    sound up to EXAMPLE_LOOKS_S after its onset, and the whole of it EXAMPLE_TAILS_S before the window's end."""
    sr, n = SAMPLE_RATE, WINDOW_SAMPLES
    silence = np.zeros(n, np.float32)
    heard = {min(len(sound), int((look + CUT_MARGIN_SECONDS) * sr)) for look in EXAMPLE_LOOKS_S}
    wins = [np.concatenate([silence, sound[:h]])[-n:] for h in sorted(heard)]
    wins += [np.concatenate([silence, sound, np.zeros(int(tail * sr), np.float32)])[-n:] for tail in EXAMPLE_TAILS_S]
    return np.stack(wins)


def frozen_member(classifier):
    """The member whose network is AudioSet's own (the ensemble's probe): its embedding was never tuned to ESC-50's
    50 classes, so it describes a sound the 50 do not know as well as one they do. Else the last member."""
    import torch

    from models import efficientat

    members = list(getattr(classifier, "members", None) or [classifier])
    pretrained = torch.load(efficientat.PRETRAINED_WEIGHTS, map_location="cpu", weights_only=True)
    key = next(iter(pretrained))
    for m in members:
        mine = m.backbone.state_dict()[key].float()
        if torch.allclose(mine, pretrained[key].float(), atol=1e-2, rtol=1e-2):
            return m
    return members[-1]


def weights_fingerprint(net) -> str:
    """What an embedding cache is valid for: a hash of the network's weights."""
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Heard:
    probs: np.ndarray          # (B, len(class_names))
    tags: np.ndarray | None    # (B, 527) AudioSet tag probabilities
    voiced: list               # per window: the labels near enough their examples to pass the speech rule
    taught: list               # per window: the labels whose probability is mostly taught sounds' (the gate's rule 3)


class TaughtEar:
    """A classifier with AudioSet tags (the shipped pair) and a venue's taught sounds, heard from one pass of the
    network. `class_names` are the classifier's, then each taught sound's that is not taught as a built-in. The
    folder is looked at every RECHECK_S; a sound taught, forgotten or imported meanwhile is heard (or not) from the
    next window on."""

    def __init__(self, classifier, taught_dir: str | Path | None = None):
        if not getattr(classifier, "tag_names", None):
            raise TaughtError("taught sounds need a classifier with AudioSet tags (the shipped efficientat_mn04 pair)")
        self.classifier = classifier
        self.tag_names = classifier.tag_names
        self.taught_dir = taught_folder(taught_dir)
        self.listener = frozen_member(classifier)
        self.members = list(getattr(classifier, "members", None) or [classifier])
        # a cache is good while the weights and the windows an example is heard in are the same
        self.fingerprint = f"{weights_fingerprint(self.listener.backbone)} {EXAMPLE_LOOKS_S} {EXAMPLE_TAILS_S}"
        with np.load(NEGATIVES) as z:  # what the built-in classes sound like to the listener: the probe's other side
            self._negatives, self._negative_labels = z["embeddings"].astype(np.float32), z["labels"]
            self._talk = z["talk"].astype(np.float32)
        self._negative_logits = self._known_logits(self._negatives)
        self._talk_logits = self._known_logits(self._talk)
        self._head = (np.zeros((384, 0), np.float32), np.zeros(0, np.float32))
        self.sounds: list[TaughtSound] = []
        self.errors: list[str] = []
        self._signature, self._checked_at = None, float("-inf")
        self._examples = np.zeros((0, 384), np.float32)  # every example window, unit length
        self._owner = np.zeros(0, np.int64)               # the taught sound of each
        self.refresh(force=True)

    # the classifier's face, so hear(), classify and the server take an ear as they take a classifier
    @property
    def backbone(self):
        return self.classifier.backbone

    @property
    def trained(self) -> bool:
        return self.classifier.trained

    @property
    def builtin_names(self) -> list[str]:
        return list(self.classifier.class_names)

    @property
    def class_names(self) -> list[str]:
        return self.builtin_names + [s.name for s in self.sounds if s.as_ is None]

    def refresh(self, force: bool = False) -> bool:
        """Look at the folder (at most every RECHECK_S unless `force`); True when what is taught changed."""
        now = time.monotonic()
        if not force and now - self._checked_at < RECHECK_S:
            return False
        self._checked_at = now
        sig = signature(self.taught_dir)
        if sig == self._signature:
            return False
        self._signature = sig
        errors: list[str] = []
        sounds = [s for s in taught_sounds(self.taught_dir, errors)
                  if s.as_ is None or s.as_ in self.builtin_names]
        kept, vectors = [], []
        for s in sounds:
            try:
                vectors.append(self.example_embeddings(s))
                kept.append(s)
            except (OSError, ValueError) as exc:  # forgotten while it was being read, or a damaged example
                errors.append(f"{s.folder}: {exc}")
        self.sounds, self.errors = kept, errors
        if vectors:
            x = np.concatenate(vectors)
            self._examples = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)
            self._owner = np.concatenate([np.full(len(v), i, np.int64) for i, v in enumerate(vectors)])
            self._head = fit_taught_head(self._negatives, self._negative_logits, self._negative_labels,
                                         self._talk, self._talk_logits, x, self._known_logits(x), self._owner,
                                         len(kept))
        else:
            self._examples, self._owner = np.zeros((0, 384), np.float32), np.zeros(0, np.int64)
        return True

    def example_embeddings(self, sound: TaughtSound) -> np.ndarray:
        """The embedding of each of a sound's example windows: from its cache when that was made by these weights
        of these examples, else heard now (and cached, written whole or not at all)."""
        import soundfile

        cache = sound.folder / "embeddings.npz"
        stamp = [f"{p.name}:{p.stat().st_size}" for p in sound.examples]
        try:
            with np.load(cache) as z:
                if str(z["fingerprint"]) == self.fingerprint and list(z["examples"]) == stamp:
                    return z["embeddings"]
        except (OSError, KeyError, ValueError):
            pass
        wins = np.concatenate([example_windows(soundfile.read(p, dtype="float32")[0]) for p in sound.examples])
        emb = self.listener.outputs(self.listener.log_mels(wins))[2]
        partial = sound.folder / ".embeddings.partial.npz"
        try:
            np.savez(partial, fingerprint=self.fingerprint, examples=np.array(stamp), embeddings=emb)
            os.replace(partial, cache)
        except OSError:  # a read-only folder, or the sound was forgotten meanwhile: heard all the same
            pass
        return emb

    def listen(self, waveforms: np.ndarray) -> Heard:
        """(B, N_SAMPLES) windows -> probabilities over class_names, AudioSet tags, what may pass the speech rule, and
        which labels the taught sounds carry (more than half of the label's probability)."""
        self.refresh()
        mels = self.members[0].log_mels(waveforms)
        outs = [m.outputs(mels) for m in self.members]
        probs = np.mean([_softmax(logits) for logits, _, _ in outs], 0)
        tags = np.mean([t for _, t, _ in outs], 0)
        if not self.sounds:
            return Heard(probs, tags, [set() for _ in probs], [set() for _ in probs])
        logits, _, emb = outs[self.members.index(self.listener)]
        near = self.scores(emb)                                         # (B, sounds) nearest-example cosines
        joint = _softmax(np.concatenate([logits, taught_logits(emb, self._head, near)], 1))
        taught = joint[:, logits.shape[1]:-1]                           # each taught sound's share
        talk = joint[:, -1:]                                            # talk's: shown as no class at all
        out = np.concatenate([probs * (1.0 - taught.sum(1, keepdims=True) - talk),
                              np.zeros((len(probs), len(self.class_names) - len(self.builtin_names)))], 1)
        index = {n: i for i, n in enumerate(self.class_names)}
        carried = np.zeros_like(out)                                    # each label's share from taught sounds
        for j, s in enumerate(self.sounds):
            carried[:, index[s.shows]] += taught[:, j]
        out += carried
        voiced = [{s.shows for j, s in enumerate(self.sounds) if near[i, j] >= NEAR_COSINE} for i in range(len(out))]
        labels = {s.shows for s in self.sounds}
        by_taught = [{label for label in labels if carried[i, index[label]] > out[i, index[label]] / 2}
                     for i in range(len(out))]
        return Heard(out.astype(np.float32), tags, voiced, by_taught)

    def _known_logits(self, embeddings: np.ndarray) -> np.ndarray:
        head = self.listener.head
        return embeddings @ head.weight.detach().cpu().numpy().T + head.bias.detach().cpu().numpy()

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(B, 384) -> (B, taught sounds): each sound's nearest example window's cosine with each window."""
        return nearest(embeddings, self._examples, self._owner, len(self.sounds))

    def predict_with_tags(self, waveforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heard = self.listen(waveforms)
        return heard.probs, heard.tags

    def predict(self, waveforms: np.ndarray) -> np.ndarray:
        return self.listen(waveforms).probs


def nearest(embeddings: np.ndarray, examples: np.ndarray, owner: np.ndarray, n_taught: int) -> np.ndarray:
    """(B, 384) windows -> (B, n_taught): the cosine of each window with each taught sound's nearest example
    (`examples`: unit length; `owner`: the sound of each)."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-9)
    cos = e @ examples.T
    out = np.full((len(e), n_taught), -1.0, np.float32)
    for j in range(n_taught):
        out[:, j] = cos[:, owner == j].max(1)
    return out


def taught_logits(embeddings: np.ndarray, head: tuple[np.ndarray, np.ndarray], near: np.ndarray,
                  shift: float = SHIFT) -> np.ndarray:
    """(B, 384) windows -> (B, n_taught + 1) logits: each taught sound's (the probe's, favoured by `shift` and by the
    window's nearness to the sound's examples), then talk's."""
    W, b = head
    z = embeddings @ W + b
    z[:, :-1] += shift + NEAR_WEIGHT * (near - 1.0)
    return z


def fit_taught_head(neg_x: np.ndarray, neg_logits: np.ndarray, neg_labels: np.ndarray, talk_x: np.ndarray,
                    talk_logits: np.ndarray, pos_x: np.ndarray, pos_logits: np.ndarray, pos_labels: np.ndarray,
                    n_taught: int, l2: float = PROBE_L2) -> tuple[np.ndarray, np.ndarray]:
    """(W (384, n_taught + 1), b): logistic regression for the taught sounds and talk beside the known classes'
    fixed logits, on the taught examples (labels 0..n_taught-1), the known classes' negatives (their class indices)
    and windows of people talking (the last column: a word taught in a voice is told from talk in general by more
    than its nearness to its examples), L-BFGS on standardised features (as offline.train.fit_head), the
    standardisation folded into W and b."""
    import torch
    import torch.nn.functional as F

    talk_label = neg_logits.shape[1] + n_taught
    neg_x, neg_logits = np.concatenate([neg_x, talk_x]), np.concatenate([neg_logits, talk_logits])
    neg_labels = np.concatenate([neg_labels, np.full(len(talk_x), talk_label)])

    # float32, and stopped once a step changes the loss by less than a millionth: the same head to a few parts in
    # 1e5 of the loss, in a fifth of the time of float64 run to its end (most of the time to teach a sound)
    x = torch.from_numpy(np.concatenate([neg_x, pos_x])).float()
    fixed = torch.from_numpy(np.concatenate([neg_logits, pos_logits])).float()
    y = torch.from_numpy(np.concatenate([neg_labels, fixed.shape[1] + pos_labels])).long()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    W = torch.zeros(x.shape[1], n_taught + 1, requires_grad=True)
    b = torch.zeros(n_taught + 1, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=PROBE_ITERATIONS, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-4, tolerance_change=1e-6)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(torch.cat([fixed, z @ W + b], 1), y) + l2 * (W ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        Ws = W / std[:, None]
        return Ws.numpy(), (b - mean @ Ws).numpy()


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)
