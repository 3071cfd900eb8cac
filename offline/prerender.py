"""Pre-rendered dream sequences per class: what the visualizer plays when no live dream arrives.

    prerender(["cat", "dog"], frames=120)     # writes prerendered/cat/00000.png ...
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from common.paths import PRERENDERED
from common.seeds import seed_image
from models.backbones import create_backbone, default_device
from models.dream import DreamEngine, profile_size
from models.seeds import SEED_DIR, SeedImageError, imagenet_classes, load_seed_image, seed_classes, seed_image_path
from offline import NUM_THREADS

PRERENDER_FRAMES = 120


def prerender(classes: list[str] | None = None, frames: int = PRERENDER_FRAMES, size: int | None = None,
              out_dir: str | Path = PRERENDERED, backbone: str = "efficientnet_lite0",
              weights_path: str | Path | None = None, intensity: float = 1.0, zoom_speed: float = 0.5,
              engine: DreamEngine | None = None, seed_dir: str | Path = SEED_DIR, progress: bool = True) -> int:
    """Write out_dir/<class>/00000.png ... for each class (default: every class with a seed image); returns the number
    of frames written.
    Each class dreams from the seed the live dream uses (`seed_image_path`). Resumable: existing frames are kept and
    the zoom continues from the last one. Each frame is dreamt from the saved (uint8) previous frame with jitter
    seeded by its index, so a resumed sequence is the same sequence an uninterrupted run writes. `size`: the dream's
    short side; None: the machine's profile, as the live server chooses it."""
    from PIL import Image
    from tqdm import tqdm

    out_dir, seed_dir = Path(out_dir), Path(seed_dir)
    classes = classes or seed_classes(seed_dir)
    missing = [c for c in classes if seed_image(seed_dir / c) is None]
    if missing:
        raise SeedImageError(f"no seed image for {', '.join(missing)} in {seed_dir}; "
                             f"add one, or generate one with `hear-and-see seeds generate CLASS`")
    torch.set_num_threads(min(torch.get_num_threads(), NUM_THREADS))
    if engine is None:
        engine = DreamEngine(create_backbone(backbone, pretrained=True, weights_path=weights_path),
                             size=size or profile_size(default_device()))
    todo = {}
    for name in classes:
        done = 0
        while done < frames and _readable_png(out_dir / name / f"{done:05d}.png"):
            done += 1
        todo[name] = done
    bar = tqdm(total=len(classes) * frames, initial=sum(todo.values()), unit="frame", disable=not progress,
               desc="prerender")
    written = 0
    for name, done in todo.items():
        if done >= frames:
            continue
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        engine.reset()
        engine.set_seed(name, load_seed_image(seed_image_path(name, seed_dir)), imagenet_classes(name))
        if done > 0:
            engine.set_image(load_seed_image(folder / f"{done - 1:05d}.png"))
            engine.travelled = -done * math.log1p(-engine.zoom_amount(intensity, zoom_speed))
        for i in range(done, frames):
            bar.set_postfix_str(name)
            engine.rng.manual_seed(i)
            frame = engine.next_keyframe(intensity, zoom_speed)
            tmp = folder / f".{i:05d}.png.part"
            Image.fromarray(frame).save(tmp, format="PNG")
            tmp.replace(folder / f"{i:05d}.png")  # atomic: a killed run never leaves half a frame behind
            engine.set_image(frame)
            written += 1
            bar.update(1)
    bar.close()
    return written


def _readable_png(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        load_seed_image(path)
        return True
    except SeedImageError:
        return False
