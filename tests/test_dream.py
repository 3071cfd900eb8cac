"""The dream engine: right (octaves, objectives, class pull, zoom, crossfade, aspect), leak-free, resumable, a zoom
that travels, and still the heard class."""
import functools
import gc
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from models import dream, seeds
from models.backbones import BackboneError, create_backbone
from models.dream import DreamEngine, is_degenerate
from common.seeds import seed_image, seed_pictures
from models.seeds import SeedImageError, load_seed_image
from offline.dream_quality import travel
from offline.prerender import prerender

ROOT = Path(__file__).resolve().parent.parent
CHELSEA = seeds.seed_image_path("cat")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests run beside other jobs on a 2-core box, where 2 OpenMP threads spin-wait on each other and
    run many times slower than 1 (see BENCHMARKS.md); the setting is process-wide, so put it back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _synthetic_seed(h=72, w=96, seed=0) -> np.ndarray:
    """A smooth colourful picture with a few shapes: enough structure for a random network to dream on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.4 * np.sin(6 * x + seed), 0.5 + 0.4 * np.cos(5 * y), 0.5 + 0.3 * np.sin(4 * (x + y))], -1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.15)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r ** 2] = rng.uniform(0, 1, 3)
    return (img.clip(0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def lite0_random():
    return create_backbone("efficientnet_lite0", pretrained=False).eval()


def _engine(backbone, **kw):
    kw = dict(dict(size=64, device="cpu", octaves=2, iterations=2, step_size=0.02, aspect=1.0), **kw)
    return DreamEngine(backbone, **kw)


def _live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance() on torch.distributed's deprecated objects warns
        warnings.simplefilter("ignore")
        return sum(_is_tensor(o) for o in gc.get_objects())


def _is_tensor(o) -> bool:
    try:
        return isinstance(o, torch.Tensor)
    except ReferenceError:  # a weakref.proxy whose object is gone (another test's leftovers)
        return False


def _mean_abs(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_keyframes_are_uint8_frames_that_move_and_are_neither_black_nor_blown_out(lite0_random):
    engine = _engine(lite0_random)
    engine.set_seed("a", _synthetic_seed())
    frames = [engine.next_keyframe() for _ in range(4)]
    for f in frames:
        assert f.dtype == np.uint8 and f.shape == (64, 64, 3)
        assert not is_degenerate(f)
    assert min(_mean_abs(a, b) for a, b in zip(frames[1:], frames)) > 0.5
    assert engine.current_seed == "a"


def test_is_degenerate_flags_black_white_and_flat_frames():
    assert is_degenerate(np.zeros((8, 8, 3), np.uint8))
    assert is_degenerate(np.full((8, 8, 3), 255, np.uint8))
    assert is_degenerate(np.full((8, 8, 3), 128, np.uint8))
    assert not is_degenerate(_synthetic_seed())


def test_next_keyframe_before_a_seed_is_a_clear_error(lite0_random):
    with pytest.raises(RuntimeError, match="set_seed"):
        _engine(lite0_random).next_keyframe()


def test_unknown_layer_names_the_valid_ones(lite0_random):
    with pytest.raises(BackboneError, match="blocks.4"):
        DreamEngine(lite0_random, layer="blocks.99", size=64, device="cpu")


def test_hooks_are_removed_and_memory_does_not_grow_over_many_keyframes(lite0_random):
    engine = _engine(lite0_random, size=48, octaves=2, iterations=1)
    engine.set_seed("a", _synthetic_seed())
    for _ in range(20):  # warm up: allocator pools, caches and lazily built kernels settle
        engine.next_keyframe(1.0, 0.5)
    gc.collect()
    tensors_before = _live_tensors()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(150):
        engine.set_seed("b" if i % 50 == 25 else "a", _synthetic_seed(seed=i % 50 == 25))
        engine.next_keyframe(1.0, 0.5)
        assert engine.hook_count() == 0
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert grown < 256 * 1024, f"python heap grew by {grown} bytes over 150 keyframes"
    assert _live_tensors() <= tensors_before + 8
    assert len(engine._guides) == 2
    # the caller's backbone is never hooked or changed: the engine dreams on its own folded copy
    assert all(not m._forward_hooks for m in lite0_random.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0_random.modules())


def test_hooks_are_removed_even_when_a_step_fails(lite0_random):
    engine = _engine(lite0_random)
    engine.set_seed("a", _synthetic_seed())
    engine.guide = engine.guide[:3]  # wrong channel count: the guided match raises inside the hooked pass
    with pytest.raises(RuntimeError):
        engine.next_keyframe()
    assert engine.hook_count() == 0


def test_folded_dream_network_matches_the_original(lite0_random):
    for backbone in (lite0_random, create_backbone("resnet18", pretrained=False)):
        backbone = backbone.eval()
        g = torch.Generator().manual_seed(0)
        for m in backbone.modules():  # untrained BNs are identities; give them real statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        net = dream.dream_network(backbone, "cpu")
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()), backbone.name
        x = torch.rand(2, 3, 64, 64, generator=g)
        with torch.no_grad():
            ref, out = backbone(x), net(x.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(ref, out, rtol=1e-3, atol=1e-3 * ref.abs().max().item()), backbone.name


def test_octaves_are_really_used(lite0_random):
    seed = _synthetic_seed()
    frames = {}
    for octaves in (1, 3):
        engine = _engine(lite0_random, octaves=octaves, seed=0)
        engine.set_seed("a", seed)
        frames[octaves] = [engine.next_keyframe(1.0, 0.0) for _ in range(2)][-1]
    assert _mean_abs(frames[1], frames[3]) > 1.0


def test_guided_channel_and_plain_objectives_dream_differently(lite0_random):
    seed = _synthetic_seed()
    frames = {}
    for objective in ("guided", "l2", "channel"):
        engine = _engine(lite0_random, objective=objective, seed=0)
        engine.set_seed("a", seed)
        frames[objective] = [engine.next_keyframe(1.0, 0.0) for _ in range(2)][-1]
        assert _mean_abs(frames[objective], dream.to_uint8(engine.seed)) > 0.5, objective
    assert _mean_abs(frames["guided"], frames["l2"]) > 0.5
    assert _mean_abs(frames["channel"], frames["l2"]) > 0.5
    with pytest.raises(ValueError, match="objective"):
        _engine(lite0_random, objective="nope")


def test_guide_features_are_computed_once_per_seed(lite0_random):
    engine = _engine(lite0_random)
    seed = _synthetic_seed()
    engine.set_seed("a", seed)
    first = engine.guide
    engine.set_seed("b", _synthetic_seed(seed=1))
    engine.set_seed("a", seed.copy())
    assert engine.guide is first  # cached by name
    engine.set_seed("a", _synthetic_seed(seed=2))  # same name, new picture: recomputed
    assert engine.guide is not first


def test_blend_one_keeps_the_dream_at_the_seed(lite0_random):
    engine = _engine(lite0_random, blend=1.0)
    engine.set_seed("a", _synthetic_seed())
    seed = dream.to_uint8(engine.seed)
    distances = [_mean_abs(engine.next_keyframe(1.0, 1.0), seed) for _ in range(8)]
    # every keyframe restarts from the seed: one keyframe's dream away from it, never more
    assert max(distances) < 12 and max(distances) < 1.5 * distances[0] + 1
    engine = _engine(lite0_random, blend=1.0)
    engine.set_seed("a", _synthetic_seed())
    assert _mean_abs(engine.next_keyframe(0.0, 1.0), seed) == 0  # no dream, no zoom left: the seed itself


def test_no_blend_drifts_away_from_the_seed(lite0_random):
    engine = _engine(lite0_random, blend=0.0)
    engine.set_seed("a", _synthetic_seed())
    seed = dream.to_uint8(engine.seed)
    distances = [_mean_abs(engine.next_keyframe(1.0, 0.5), seed) for _ in range(8)]
    assert distances[-1] > 2 * distances[0]


def test_zoom_moves_the_frame_and_zero_zoom_holds_it(lite0_random):
    engine = _engine(lite0_random, blend=0.0, iterations=0)  # the zoom alone, no dreaming
    engine.set_seed("a", _synthetic_seed())
    a, b = engine.next_keyframe(1.0, 1.0), engine.next_keyframe(1.0, 1.0)
    assert _mean_abs(a, b) > 1.0
    still = [engine.next_keyframe(1.0, 0.0) for _ in range(2)]
    assert _mean_abs(still[0], still[1]) == 0
    # no dream, no travel: magnifying without painting new detail would only blur
    assert _mean_abs(engine.next_keyframe(0.0, 1.0), engine.next_keyframe(0.0, 1.0)) == 0
    # zooming in: the centre spreads outward, so a centred dot grows
    dot = np.full((64, 64, 3), 200, np.uint8)
    dot[28:36, 28:36] = 20
    engine = _engine(lite0_random, blend=0.0, zoom=0.2, reseed=0.0, iterations=0)  # the zoom alone
    engine.set_seed("dot", dot)
    dark = [(engine.next_keyframe(1.0, 1.0).mean(-1) < 110).sum() for _ in range(3)]
    assert dark[0] < dark[1] < dark[2]


def test_the_zoom_travels_where_a_pull_back_to_the_seed_stalls_it(lite0_random):
    """Frames far apart must differ clearly more than neighbours; pulling every keyframe back toward the seed (the
    engine before the travelling dream) makes the dream converge to one picture that only wobbles."""
    ratios = {}
    for blend in (0.0, 0.2):
        # without centre re-seeding, whose period (5 keyframes at this zoom) would line up with the 10-keyframe gap
        engine = _engine(lite0_random, size=48, octaves=1, iterations=1, blend=blend, zoom=0.1, reseed=0.0)
        engine.set_seed("a", _synthetic_seed())
        frames = []
        for i in range(30):
            engine.rng.manual_seed(i)
            frames.append(engine.next_keyframe(1.0, 1.0))
        ratios[blend] = travel(frames, gap=10)["ratio"]
    assert ratios[0.0] > 1.5 and ratios[0.0] > 1.3 * ratios[0.2], ratios


def test_the_seed_reappears_small_in_the_centre_and_grows_with_the_zoom(lite0_random):
    """Centre re-seeding, without dreaming to see it plainly: a dark disc zooms outward until the screen is dark,
    then a new small copy of the seed (a bright ring around a dark centre) fades in and grows."""
    disc = np.full((64, 64, 3), 220, np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    disc[(yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 12 ** 2] = 20
    engine = _engine(lite0_random, iterations=0, zoom=0.2, reseed=0.5)  # 1/(1-0.2) a keyframe: due after ~3
    engine.set_seed("disc", disc)
    dark = [(engine.next_keyframe(1.0, 1.0).mean(-1) < 110).mean() for _ in range(8)]
    assert dark[1] > dark[0]  # the zoom magnifies the disc
    bright_again = [i for i in range(1, 8) if dark[i] < dark[i - 1] - 0.05]
    assert bright_again, dark  # the copy brings the seed's bright surround back into view
    engine = _engine(lite0_random, iterations=0, zoom=0.2, reseed=0.0)
    engine.set_seed("disc", disc)
    plain = [(engine.next_keyframe(1.0, 1.0).mean(-1) < 110).mean() for _ in range(8)]
    assert all(b >= a for a, b in zip(plain, plain[1:]))  # without re-seeding it only ever grows


def test_dream_has_the_screen_shape_and_shows_the_whole_seed(lite0_random):
    """The subject is never cropped: a tall or square seed is fitted whole into the wide dream, and the bands
    beside it are a blurred copy of it (never black)."""
    tall = np.full((120, 60, 3), 90, np.uint8)
    tall[:6], tall[-6:] = (250, 0, 0), (0, 0, 250)  # top and bottom rows: where a crop to fill would cut
    engine = _engine(lite0_random, size=45, aspect=16 / 9, iterations=0)
    engine.set_seed("tall", tall)
    seed = dream.to_uint8(engine.seed)
    assert seed.shape == (45, 80, 3)
    middle = seed[:, 40].astype(int)
    assert middle[0, 0] > 150 and middle[0, 2] < 80, middle[:2]  # the red top row is in the picture
    assert middle[-1, 2] > 150 and middle[-1, 0] < 80, middle[-2:]  # ... and the blue bottom row
    assert seed[:, :5].mean() > 30  # the band beside it: filled, not black


def test_a_keyframe_in_parts_is_the_same_keyframe_and_a_dropped_one_changes_nothing(lite0_random):
    """The server dreams a gradient step per turn of its loop: the parts must add up to next_keyframe exactly,
    hold no hook between parts, and a keyframe abandoned half-way (the class changed) must leave the dream
    untouched."""
    whole, parted = _engine(lite0_random, octaves=3, seed=1), _engine(lite0_random, octaves=3, seed=1)
    for engine in (whole, parted):
        engine.set_seed("a", _synthetic_seed())
    expected = whole.next_keyframe(1.0, 0.5)
    parts = []
    for part in parted.keyframe_in_parts(1.0, 0.5):
        parts.append(part)
        assert parted.hook_count() == 0
    assert [p is None for p in parts] == [True] * (3 * parted.iterations - 1) + [False]  # one yield per step
    assert np.array_equal(parts[-1], expected)
    before = (parted.image.clone(), parted.travelled)
    dropped = parted.keyframe_in_parts(1.0, 1.0)
    assert next(dropped) is None
    del dropped
    assert torch.equal(parted.image, before[0]) and parted.travelled == before[1]


def test_a_new_seed_crossfades_over_the_next_keyframes(lite0_random):
    engine = _engine(lite0_random, crossfade=4, blend=0.0)
    a, b = _synthetic_seed(seed=0), _synthetic_seed(seed=5)
    engine.set_seed("a", a)
    engine.next_keyframe(0.0, 0.0)
    engine.set_seed("b", b)
    assert engine.current_seed == "b"
    target = dream.to_uint8(engine.seed)
    distances = [_mean_abs(engine.next_keyframe(0.0, 0.0), target) for _ in range(4)]
    assert distances[0] > 5 and all(x > y for x, y in zip(distances, distances[1:]))
    assert distances[-1] == 0  # linear fade: after `crossfade` keyframes only the new seed is left
    assert 0.6 < distances[1] / distances[0] < 0.75  # 3/4 of the old image left, then 2/4
    engine.set_seed("b", b)  # the same class again: no new fade
    assert engine._fade_left == 0


def test_seed_arrays_of_other_shapes(lite0_random):
    engine = _engine(lite0_random)
    grey = _synthetic_seed()[..., 0]
    engine.set_seed("grey", grey)
    assert engine.next_keyframe().shape == (64, 64, 3)
    engine.set_seed("rgba", np.dstack([_synthetic_seed(), np.full((72, 96), 255, np.uint8)]))
    with pytest.raises(ValueError, match="uint8"):
        engine.set_seed("float", _synthetic_seed().astype(np.float32))


def test_load_seed_image_reads_rgb_and_lays_transparency_on_white(tmp_path):
    from PIL import Image

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[5:15, 5:15] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clip.png")
    rgb = load_seed_image(tmp_path / "clip.png")
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[10, 10]) == (255, 0, 0)


def test_missing_or_corrupt_seed_images_name_the_file(tmp_path):
    with pytest.raises(SeedImageError, match="nowhere.png"):
        load_seed_image(tmp_path / "nowhere.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(SeedImageError, match="broken.png"):
        load_seed_image(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeedImageError, match="empty"):
        seeds.seed_image_path("empty", tmp_path)


def test_prerender_is_resumable_and_continues_the_same_sequence(lite0_random, tmp_path):
    from PIL import Image

    (tmp_path / "seeds" / "a").mkdir(parents=True)
    Image.fromarray(_synthetic_seed()).save(tmp_path / "seeds" / "a" / "a.png")
    kw = dict(size=64, seed_dir=tmp_path / "seeds", progress=False, zoom_speed=1.0)
    # zoom 0.3 a keyframe: centre re-seeds fall on the 2nd and 4th keyframes, the 4th inside the resumed part
    fast = functools.partial(_engine, lite0_random, zoom=0.3)
    assert prerender(["a"], 3, out_dir=tmp_path / "out", engine=fast(), **kw) == 3
    first = {p.name: p.read_bytes() for p in (tmp_path / "out" / "a").glob("*.png")}
    assert sorted(first) == ["00000.png", "00001.png", "00002.png"]
    assert prerender(["a"], 3, out_dir=tmp_path / "out", engine=fast(), **kw) == 0  # nothing to do
    (tmp_path / "out" / "a" / "00002.png").write_bytes(b"half a frame")  # a killed run's leftover is redone
    assert prerender(["a"], 5, out_dir=tmp_path / "out", engine=fast(), **kw) == 3
    resumed = {p.name: p.read_bytes() for p in (tmp_path / "out" / "a").glob("*.png")}
    assert all(resumed[k] == v for k, v in first.items())
    # resuming from disk continues exactly where an uninterrupted run would be
    assert prerender(["a"], 5, out_dir=tmp_path / "once", engine=fast(), **kw) == 5
    once = {p.name: p.read_bytes() for p in (tmp_path / "once" / "a").glob("*.png")}
    assert once == resumed
    assert not list((tmp_path / "out" / "a").glob(".*"))  # no temporary files left behind


def test_prerender_command_writes_frames_for_a_shipped_seed(tmp_path, capsys):
    from app.cli import main

    assert main(["prerender", "--classes", "cat", "--frames", "2", "--size", "64", "--out", str(tmp_path)]) == 0
    frames = sorted((tmp_path / "cat").iterdir())
    assert [p.name for p in frames] == ["00000.png", "00001.png"]
    assert load_seed_image(frames[0]).shape == (64, round(64 * dream.ASPECT), 3)  # the screen's shape
    assert main(["prerender", "--classes", "no_such_class", "--out", str(tmp_path)]) == 2
    assert "no seed image for no_such_class" in capsys.readouterr().err


def test_generate_seed_makes_an_image(lite0_random):
    from offline.seed_collection import generate_seed

    img = generate_seed(lite0_random, 207, size=32, steps=6)
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3) and img.std() > 0


def test_every_esc50_class_has_one_small_credited_seed_image_in_each_set():
    import torchvision

    from models.classes import CLASS_SETS, ESC50_CLASSES
    from offline.seed_collection import PHOTO_MAX_SIDE

    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert list(seeds.ESC50_TO_IMAGENET) == ESC50_CLASSES
    for name, (index, label) in seeds.ESC50_TO_IMAGENET.items():
        assert categories[index] == label, name
        assert index in seeds.imagenet_classes(name), name
    credits = (seeds.SEED_DIR / "CREDITS.md").read_text()
    for folder, classes in ((seeds.SEED_DIR, ESC50_CLASSES), (seeds.TOY_SEED_DIR, CLASS_SETS["animals"])):
        for name in classes:
            paths = seed_pictures(folder / name)
            # one picture per class: the live dream, prerender and the fallback cannot pick different ones
            assert len(paths) == 1, f"{folder / name}: {paths}"
            path = paths[0]
            assert path.relative_to(seeds.SEED_DIR).as_posix() in credits
            assert path.stat().st_size < 300_000, path
            assert max(load_seed_image(path).shape[:2]) <= PHOTO_MAX_SIDE, path
    assert "UNKNOWN" not in credits


def test_one_seed_rule_for_the_dream_and_the_fallback(tmp_path):
    """The server, prerender and the fallback all take a class's seed from common.seeds.seed_image."""
    from visualizer import fallback

    assert fallback.seed_image is seed_image  # one rule, not a copy kept in step
    mixed = tmp_path / "mixed"  # several pictures and a generated one: the first real picture wins
    mixed.mkdir()
    for file in ("generated.png", "b.jpg", "a.webp", ".hidden.png", "notes.txt"):
        (mixed / file).write_bytes(b"")
    assert seed_image(mixed) == seeds.seed_image_path("mixed", tmp_path) == mixed / "a.webp"
    (mixed / "a.webp").unlink()
    (mixed / "b.jpg").unlink()
    assert seed_image(mixed) == seeds.seed_image_path("mixed", tmp_path) == mixed / "generated.png"
    (mixed / "generated.png").unlink()
    assert seed_image(mixed) is None
    with pytest.raises(SeedImageError, match="no seed image"):
        seeds.seed_image_path("mixed", tmp_path)


def _top5_hits(backbone, frames, cls) -> float:
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return (backbone(x).topk(5, dim=1).indices == cls).any(1).float().mean().item()


def test_real_lite0_keeps_chelsea_a_cat_over_a_few_keyframes():
    backbone = create_backbone("efficientnet_lite0", pretrained=True).eval()
    seed = load_seed_image(CHELSEA)
    engine = DreamEngine(backbone, layer="blocks.4", size=224, device="cpu")
    engine.set_seed("cat", seed, seeds.imagenet_classes("cat"))
    with torch.no_grad():
        cls = backbone(engine.seed).argmax(1).item()
    assert cls in seeds.imagenet_classes("cat")
    frames = [engine.next_keyframe(1.0, 0.5) for _ in range(8)]
    assert frames[0].shape == (224, round(224 * dream.ASPECT), 3)
    assert _top5_hits(backbone, frames, cls) >= 0.8
    assert min(_mean_abs(a, b) for a, b in zip(frames[1:], frames)) > 1.0
    assert not any(is_degenerate(f) for f in frames)


@pytest.mark.heavy
def test_real_lite0_sixty_keyframes_travel_and_another_network_still_sees_the_class():
    """The measure: over 60 keyframes, frames 20 apart differ clearly more than neighbours (the zoom does
    not stall), and EfficientNet-Lite2, which the dream never climbs, finds the seed's class in its top-5 for at
    least 80 % of keyframes. Gallery cat and dog photographs, and the toy's clip-art dog."""
    from offline.dream_quality import Judge

    backbone = create_backbone("efficientnet_lite0", pretrained=True).eval()
    judge = Judge()
    for name, folder in (("cat", seeds.SEED_DIR), ("dog", seeds.SEED_DIR), ("dog", seeds.TOY_SEED_DIR)):
        engine = DreamEngine(backbone, device="cpu")
        engine.set_seed(name, load_seed_image(seeds.seed_image_path(name, folder)), seeds.imagenet_classes(name))
        frames = []
        for i in range(60):
            engine.rng.manual_seed(i)
            frames.append(engine.next_keyframe(1.0, 0.5))
        moved = travel(frames)
        assert moved["ratio"] >= 2.0, (name, folder, moved)
        assert judge.top5_share(frames, seeds.imagenet_classes(name)) >= 0.8, (name, folder)
        assert not any(is_degenerate(f) for f in frames)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "efficientat_mn04"])  # a log-mel ear, a waveform ear
def test_auralize_climbs_the_class_in_the_waveform_each_ear_hears(backbone):
    from models import audio
    from offline import auralize
    from models.classes import ESC50_CLASSES
    from models.model import build_model

    # Pretrained networks under a random head (the same one every run, so the test means the same each time):
    # random-init networks hear next to nothing (mn04's embedding is ~1e-9 whatever the sound, and Lite0's
    # probabilities move in the fourth decimal).
    torch.manual_seed(0)
    model = build_model(backbone, ESC50_CLASSES).eval()
    index = ESC50_CLASSES.index("rooster")
    # the same start, before and after climbing, heard as the app hears it (the mn04 ear through soxr)
    heard = [auralize.heard_as(model, auralize.waveform_for(model, index, steps=steps).numpy(), "rooster")
             for steps in (0, 12)]
    assert heard[1] > heard[0], heard
    wave = auralize.auralize(model, "rooster", steps=2)
    assert wave.shape == (audio.N_SAMPLES,) and wave.dtype == np.float32 and np.isfinite(wave).all()
    assert 0 < np.abs(wave).max() < 1
    with pytest.raises(ValueError, match="rooster"):
        auralize.auralize(model, "unicorn")
