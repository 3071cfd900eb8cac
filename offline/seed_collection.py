"""Rebuilding seed_images/ from its public-domain / CC0 sources, and generating seeds where no picture exists.
Offline work: the live installation only reads the folders (models/seeds.py).

    collect()                    # gallery set: photographs, else scikit-image samples, else clip art; toy set: clip art
    generate_missing(["wind"])   # a class visualisation, for a class with no free picture at all
"""
from __future__ import annotations

import copy
import csv
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.paths import SHARED
from common.seeds import GENERATED_NAME, seed_pictures
from models.seeds import ESC50_TO_IMAGENET, SEED_DIR, TOY_SEED_DIR, load_seed_image, seed_classes



log = logging.getLogger(__name__)

PHOTO_MAX_SIDE = 960  # photographs keep enough pixels for a 720-line dream (GPU profile)
CLIP_ART_MAX_SIDE = 448
PHOTOS = SHARED / "images" / "photos"  # public-domain / CC0 photographs by class, credited in CREDITS.tsv
SKIMAGE = SHARED / "images" / "skimage"  # scikit-image's sample images
OPENCLIPART = Path("/usr/share/openclipart/png")  # Debian openclipart-png 1:0.18+dfsg-19
OPENCLIPART_LICENCE = "Public Domain Dedication (Open Clip Art Library; Debian package openclipart-png 1:0.18+dfsg-19)"

# The gallery's photograph per class (under PHOTOS): chosen by looking at how each dreams (BENCHMARKS.md,
# "Dreams that travel"); the public-domain ones where a class has a CC-BY alternative.
PHOTO_SOURCES = {
    "cat": "cat/skimage_chelsea.png", "chirping_birds": "chirping_birds/gcompris_kingfisher_Frank-2.0.webp",
    "clock_tick": "clock_tick/skimage_clock_motion.png", "cow": "cow/gcompris_cow_Dohduhdah.webp",
    "crackling_fire": "crackling_fire/forest_fire_Jean_Beaufort.jpg",
    "dog": "dog/gcompris_german_shepherd_Kemperman.webp", "frog": "frog/gcompris_golden_toad.jpg",
    "hen": "hen/gcompris_chickens_Tranquilles.webp", "insects": "insects/gcompris_honey_bee_John_Severns.jpg",
    "pig": "pig/gcompris_pig_Teinesavaii.webp", "sheep": "sheep/gcompris_sheep_Rob_Mitchell.webp",
}
SKIMAGE_SOURCES = {"drinking_sipping": ("coffee.png", "CC0, photograph by Rachel Michetti (scikit-image `coffee`)")}
# Clip art (under OPENCLIPART): the gallery's picture where there is no photograph, and every picture of the toy.
CLIP_ART_SOURCES = {
    "dog": "animals/mammals/dogs/black_lab_ganson.png",
    "rooster": "animals/birds/gallo_di_profilo_archite_01.png",
    "pig": "animals/mammals/pig_marcelo_caiafa1.png",
    "cow": "animals/mammals/vacca_pezzata_rossa_val_01.png",
    "frog": "animals/red-eye_frog_mirko_maisc_01.png",
    "hen": "animals/birds/hen_01.png",
    "insects": "animals/bugs/bee1_mimooh_01.png",
    "sheep": "animals/mammals/sheep-md-v0.1.png",
    "crow": "animals/birds/crow_01.png",
    "crickets": "animals/bugs/cavalletta_architetto_fr_01.png",
    "chirping_birds": "animals/birds/uccello_profilo_01_archi_01.png",
    "rain": "signs_and_symbols/weather/rain.png",
    "thunderstorm": "signs_and_symbols/weather/storm.png",
    "water_drops": "signs_and_symbols/weather/drop_peterm_01.png",
    "crackling_fire": "recreation/party/fire_valessio_soares_de_.png",
    "pouring_water": "food/beverages/ice_water_ganson.png",
    "crying_baby": "people/baby_anthony_liekens_01.png",
    "clapping": "people/bodypart/hands_lorenzo_luengo_01.png",
    "footsteps": "recreation/holiday/footprints_in_sand_ganson.png",
    "laughing": "people/bodypart/mouth_-_body_part_nicu_b_01.png",
    "brushing_teeth": "tools/toothbrush_and_paste_ganson.png",
    "snoring": "people/camper_sleeping_ganson.png",
    "mouse_click": "computer/mouse_the_structorr_.png",
    "keyboard_typing": "computer/hardware/keyboard_01.png",
    "can_opening": "food/beverages/pop_can_bw.png",
    "vacuum_cleaner": "tools/blue_vacuum_cleaner_jaim_01.png",
    "clock_alarm": "signs_and_symbols/clocks/alarm_clock_mike_powers_.png",
    "clock_tick": "signs_and_symbols/clocks/orologio_da_parete_archi_01.png",
    "glass_breaking": "recreation/party/wine_glass_christian_h._.png",
    "chainsaw": "unsorted/motosega.png",
    "siren": "people/fire_engine_mimooh_01.png",
    "car_horn": "transportation/redcar_marcelo_caiafa_.png",
    "engine": "transportation/truck_jarno_vasamaa1.png",
    "train": "recreation/toys/kiddy_train_orlando_kara_.png",
    "church_bells": "recreation/holiday/christmas/jingle_bells_01.png",
    "airplane": "transportation/vehicles/aircraft_jarno_vasamaa1.png",
    "fireworks": "recreation/holiday/fireworks_ganson2.png",
    "hand_saw": "tools/saw_peterm_.png",
    # heard through the AudioSet head (models/classes.py AUDIOSET_CLASSES), and talking where a venue shows it
    "horse": "animals/mammals/horses/horse_1_konstantin_r._01.png",
    "duck": "animals/birds/jonathon_s_duck_01.png",
    "owl": "animals/birds/owl_on_branch_ganson.png",
    "speech": "people/chat_icon_01.png",
}
TOY_CLASSES = ("dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow", "horse", "duck", "owl")


def generate_seed(backbone, imagenet_class: int, size: int = 224, steps: int = 240, step_size: float = 0.02,
                  seed: int = 0, device=None) -> np.ndarray:
    """A picture of `imagenet_class` as the network sees it: gradient ascent on its logit from smooth noise,
    coarse to fine, with jitter and a light blur every other step (the blur is what keeps it image-like rather
    than adversarial noise). Returns uint8 (size, size, 3)."""
    from torchvision.transforms.functional import gaussian_blur

    device = torch.device(device) if device is not None else next(backbone.parameters()).device
    net = copy.deepcopy(backbone).eval().requires_grad_(False).to(device)
    g = torch.Generator().manual_seed(seed)
    img = 0.5 + 0.15 * torch.randn(1, 3, max(2, size // 28), max(2, size // 28), generator=g)
    img = F.interpolate(img, size=(size // 2, size // 2), mode="bicubic", align_corners=False).clamp(0, 1).to(device)
    sizes = (size // 2, (3 * size) // 4, size)
    for level, side in enumerate(sizes):
        img = F.interpolate(img, size=(side, side), mode="bilinear", align_corners=False)
        for i in range(steps // len(sizes)):
            jitter = max(1, side // 14)
            oy, ox = torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist()
            with torch.enable_grad():  # callers may sit in no_grad
                x = torch.roll(img, (oy, ox), (2, 3)).requires_grad_(True)
                logits = net(x)
                # the class's logit against the mean: raising every logit at once is not "more of this class"
                loss = logits[0, imagenet_class] - logits[0].mean()
                (grad,) = torch.autograd.grad(loss, x)
            grad = torch.roll(grad, (-oy, -ox), (2, 3))
            with torch.no_grad():
                img = img + grad * (step_size / (grad.abs().mean() + 1e-8))
                if i % 2 == 0:
                    img = gaussian_blur(img, kernel_size=5, sigma=1.5 - 0.25 * level)
                img = (0.5 + (img - 0.5) * 0.998).clamp(0, 1)  # a little decay toward grey: no runaway contrast
    return (img[0] * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _clip_art_square(path: Path, max_side: int = CLIP_ART_MAX_SIDE, margin: float = 0.08):
    """Lay on white, crop to the drawing (many clip-art files are a small figure on an A4 page), pad square."""
    from PIL import Image


    rgb = load_seed_image(path)
    ink = np.abs(rgb.astype(np.int16) - 255).sum(-1) > 30
    ys, xs = np.nonzero(ink)
    if len(ys):
        rgb = rgb[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = rgb.shape[:2]
    side = int(max(h, w) * (1 + 2 * margin))
    square = np.full((side, side, 3), 255, np.uint8)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = rgb
    im = Image.fromarray(square)
    return im.resize((max_side, max_side), Image.LANCZOS) if side > max_side else im


def collect(seed_dir: Path = SEED_DIR, toy_dir: Path = TOY_SEED_DIR) -> list[Path]:
    """Rebuild both seed sets from their sources, one picture per class, and rewrite the credits. A source that is
    not on this machine (openclipart-png not installed) leaves that class's folder as it is."""
    written = []
    for name in dict.fromkeys([*ESC50_TO_IMAGENET, *CLIP_ART_SOURCES]):  # ESC-50's classes, then those beyond
        if name in PHOTO_SOURCES:
            written += _install(PHOTOS / PHOTO_SOURCES[name], Path(seed_dir) / name, photo=True)
        elif name in SKIMAGE_SOURCES:
            written += _install(SKIMAGE / SKIMAGE_SOURCES[name][0], Path(seed_dir) / name, photo=True)
        elif name in CLIP_ART_SOURCES:
            written += _install(OPENCLIPART / CLIP_ART_SOURCES[name], Path(seed_dir) / name, photo=False)
    for name in TOY_CLASSES:
        # the toy's cat is the one photograph children already know from the gallery: there is no clip-art cat
        source = (PHOTOS / PHOTO_SOURCES[name]) if name == "cat" else (OPENCLIPART / CLIP_ART_SOURCES[name])
        written += _install(source, Path(toy_dir) / name, photo=name == "cat")
    write_credits(seed_dir, toy_dir)
    return written


def _install(source: Path, folder: Path, photo: bool) -> list[Path]:
    from PIL import Image

    if not source.is_file():
        log.warning("%s is not on this machine: %s left as it is", source, folder)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    if photo:  # keep the frame, only make it smaller (JPEG: a tenth of a PNG)
        im = Image.fromarray(load_seed_image(source))
        im.thumbnail((PHOTO_MAX_SIDE, PHOTO_MAX_SIDE), Image.LANCZOS)
        out = folder / (source.stem + ".jpg")
        im.save(out, quality=85)
    else:
        out = folder / (source.stem + ".png")
        _clip_art_square(source).save(out, optimize=True)
    for other in seed_pictures(folder):  # one picture per class: nothing else to choose from
        if other != out:
            other.unlink()
    return [out]


def _photo_credits() -> dict[str, dict]:
    """PHOTOS/CREDITS.tsv by file stem."""
    path = PHOTOS / "CREDITS.tsv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {Path(row["file"]).stem: row for row in csv.DictReader(f, delimiter="\t")}


def _credit(name: str, path: Path, photos: dict[str, dict]) -> tuple[str, str]:
    """(where it came from, licence) for a seed file, from the source tables."""
    if path.name == GENERATED_NAME:
        idx, label = ESC50_TO_IMAGENET[name]
        return (f"generated: gradient ascent on ImageNet class {idx} ({label}) of efficientnet_lite0 from smooth "
                "noise", "project's own work, same licence as the code")
    if path.stem in photos:
        row = photos[path.stem]
        return (f"photograph by {row['author']}; {row['source']} (resized to at most {PHOTO_MAX_SIDE} px)",
                row["licence"] + (" (attribution: " + row["author"] + ")" if "BY" in row["licence"] else ""))
    for src, licence in SKIMAGE_SOURCES.values():
        if Path(src).stem == path.stem:
            return f"scikit-image sample data, `{src}`", licence
    for rel in CLIP_ART_SOURCES.values():
        if Path(rel).stem == path.stem:
            return (f"Open Clip Art Library, `{rel}` (cropped to the drawing, padded square, at most "
                    f"{CLIP_ART_MAX_SIDE} px)", OPENCLIPART_LICENCE)
    return "UNKNOWN: add its source here", "UNKNOWN"


def write_credits(seed_dir: Path = SEED_DIR, toy_dir: Path = TOY_SEED_DIR) -> Path:
    photos = _photo_credits()
    lines = ["# Seed image credits", "",
             "Every image under `seed_images/` (the gallery's set) and `seed_images/toy/` (the toy's) is listed here",
             "with its source and licence, as written by `hear-and-see seeds collect`. Images named",
             f"`{GENERATED_NAME}` were generated by this project (`hear-and-see seeds generate`) and contain no",
             "third-party material.", "",
             "| class | file | source | licence |", "|---|---|---|---|"]
    for folder in (Path(seed_dir), Path(toy_dir)):
        if not folder.is_dir():
            continue
        for name in seed_classes(folder):
            for path in seed_pictures(folder / name):
                where, licence = _credit(name, path, photos)
                lines.append(f"| {name} | {path.relative_to(seed_dir).as_posix()} | {where} | {licence} |")
    out = Path(seed_dir) / "CREDITS.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def generate_missing(classes: list[str] | None = None, size: int = 224, seed_dir: Path = SEED_DIR,
                     backbone=None) -> list[Path]:
    """Seeds made by the ImageNet head for `classes` (default: every ESC-50 class without a picture)."""
    from PIL import Image

    from common.errors import UserError
    from models.backbones import create_backbone

    classes = classes or [c for c in ESC50_TO_IMAGENET if not seed_pictures(Path(seed_dir) / c)]
    unknown = [c for c in classes if c not in ESC50_TO_IMAGENET]
    if unknown:
        raise UserError(f"no ImageNet class mapped for {', '.join(unknown)}; add them to ESC50_TO_IMAGENET")

    backbone = (backbone or create_backbone("efficientnet_lite0", pretrained=True)).eval()
    device = next(backbone.parameters()).device
    written = []
    for name in classes:
        idx, _ = ESC50_TO_IMAGENET[name]
        best = (-1.0, None)
        for attempt in range(3):  # some starts climb to a neighbouring class; keep the one the head believes most
            img = generate_seed(backbone, idx, size, seed=attempt)
            with torch.no_grad():
                p = backbone(_as_batch(img, device)).softmax(-1)[0, idx].item()
            best = max(best, (p, img), key=lambda b: b[0])
            if p >= 0.5:
                break
        folder = Path(seed_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(best[1]).save(folder / GENERATED_NAME, optimize=True)
        written.append(folder / GENERATED_NAME)
    write_credits(seed_dir)
    return written




def _as_batch(rgb: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).to(device).permute(2, 0, 1)[None].float() / 255
