"""Seed images: the picture each sound class dreams from, and the one rule that picks it.

seed_images/<class>/ is the gallery's set (photographs where a free one exists, else clip art or a picture the
network made itself); seed_images/toy/<class>/ is the children's toy's (friendly clip art of the ten animals). Every
file is named with source and licence in seed_images/CREDITS.md. The live dream, `prerender` and the visualizer's
fallback all show `seed_image_path(class)`: the first picture in name order, a generated one only where there is no
other. (The visualizer may not import models/, so visualizer/fallback.py states the same rule; a test holds them
together.) Rebuilding the folders is offline work: offline/seed_collection.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import UserError
from common.paths import SEED_IMAGES
from common.seeds import seed_image, seed_pictures

SEED_DIR = SEED_IMAGES
TOY_SEED_DIR = SEED_DIR / "toy"

# ESC-50 class -> (ImageNet index, ImageNet name): what a generated seed climbs toward. ImageNet-1k has no crow,
# helicopter, toothbrush, door or lightning, so some entries are the nearest thing it does have (marked "near").
ESC50_TO_IMAGENET = {
    # animals
    "dog": (207, "golden retriever"), "rooster": (7, "cock"), "pig": (341, "hog"), "cow": (345, "ox"),
    "frog": (31, "tree frog"), "cat": (285, "Egyptian cat"), "hen": (8, "hen"), "insects": (309, "bee"),
    "sheep": (348, "ram"), "crow": (18, "magpie"),  # near: the only corvid
    # natural soundscapes
    "rain": (879, "umbrella"), "sea_waves": (978, "seashore"), "crackling_fire": (862, "torch"),
    "crickets": (312, "cricket"), "chirping_birds": (15, "robin"), "water_drops": (971, "bubble"),
    "wind": (723, "pinwheel"), "pouring_water": (899, "water jug"), "toilet_flush": (861, "toilet seat"),
    "thunderstorm": (980, "volcano"),  # near
    # human, non-speech
    "crying_baby": (431, "bassinet"), "sneezing": (591, "handkerchief"), "clapping": (819, "stage"),
    "breathing": (691, "oxygen mask"), "coughing": (720, "pill bottle"), "footsteps": (770, "running shoe"),
    "laughing": (607, "jack-o'-lantern"), "brushing_teeth": (896, "washbasin"), "snoring": (721, "pillow"),
    "drinking_sipping": (504, "coffee mug"),
    # interior / domestic
    "door_wood_knock": (799, "sliding door"), "mouse_click": (673, "mouse"),
    "keyboard_typing": (508, "computer keyboard"), "door_wood_creaks": (894, "wardrobe"),
    "can_opening": (473, "can opener"), "washing_machine": (897, "washer"), "vacuum_cleaner": (882, "vacuum"),
    "clock_alarm": (409, "analog clock"), "clock_tick": (892, "wall clock"), "glass_breaking": (572, "goblet"),
    # exterior / urban
    "helicopter": (895, "warplane"),  # near
    "chainsaw": (491, "chain saw"), "siren": (407, "ambulance"), "car_horn": (468, "cab"),
    "engine": (867, "trailer truck"), "train": (820, "steam locomotive"), "church_bells": (442, "bell cote"),
    "airplane": (404, "airliner"), "fireworks": (644, "matchstick"),  # near
    "hand_saw": (477, "carpenter's kit"),  # near
}

# ImageNet classes that all look like an ESC-50 class (a dog sound is any breed of dog): the dream climbs their
# joint probability, and the quality check accepts any of them. Classes not listed use their one mapped class.
IMAGENET_GROUPS = {
    "dog": range(151, 269), "cat": range(281, 286), "rooster": (7, 8), "hen": (7, 8), "pig": (341, 342, 343),
    "cow": (345, 346, 347), "sheep": range(348, 354), "frog": (30, 31, 32), "insects": range(300, 321),
    "crickets": (311, 312), "chirping_birds": (*range(10, 25), *range(80, 97)), "crow": range(18, 25),
    "clock_tick": (409, 892), "clock_alarm": (409, 892), "crackling_fire": (862, 970, 980),
    "horse": (339, 603), "duck": (97, 98, 99), "owl": (24,),  # sorrel, horse cart; drake, merganser, goose
}


def imagenet_classes(name: str) -> tuple[int, ...]:
    """The ImageNet indices that stand for ESC-50 class `name` (empty for a name with no mapping)."""
    if name in IMAGENET_GROUPS:
        return tuple(IMAGENET_GROUPS[name])
    return (ESC50_TO_IMAGENET[name][0],) if name in ESC50_TO_IMAGENET else ()




class SeedImageError(UserError, ValueError):
    """A seed image that is missing or cannot be decoded; the message names the file."""


def load_seed_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); transparency is laid on white, as clip art expects."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise SeedImageError(f"{path}: seed image not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types for a broken file; the caller needs one
        raise SeedImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 8:
        raise SeedImageError(f"{path}: image too small ({rgb.shape[1]}x{rgb.shape[0]})")
    return rgb


def seed_image_path(name: str, seed_dir: Path = SEED_DIR) -> Path:
    """The image class `name` dreams from, everywhere (common.seeds.seed_image)."""
    path = seed_image(Path(seed_dir) / name)
    if path is None:
        raise SeedImageError(f"{Path(seed_dir) / name}: no seed image for class {name!r}; add a PNG/JPG there, "
                             f"or generate one with `hear-and-see seeds generate {name}`")
    return path


def seed_classes(seed_dir: Path = SEED_DIR) -> list[str]:
    return sorted(p.name for p in Path(seed_dir).iterdir() if p.is_dir() and seed_pictures(p))
