"""Seed images: the picture each sound class dreams from, where it came from, and how to make one where none exists.

seed_images/<class>/ holds one or more images per ESC-50 class (public-domain clip art and CC0 photos,
each named with source and licence in seed_images/CREDITS.md). A class with no suitable picture gets one
generated from the ImageNet head: gradient ascent on the logit of the mapped ImageNet class, from smooth noise.

    python -m models.seeds collect                 # rebuild seed_images/ from the sources below (needs openclipart-png)
    python -m models.seeds generate wind sneezing  # class visualisations for classes without a picture
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SEED_DIR = Path(__file__).resolve().parent.parent / "seed_images"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MAX_SIDE = 448  # stored seeds are small: the dream runs at 224-448 px

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

# Where each shipped picture came from (`collect` rebuilds seed_images/ from these). Clip art is cropped to the
# drawing and padded square on white, so the engine's centre crop keeps the whole subject.
OPENCLIPART = Path("/usr/share/openclipart/png")  # Debian openclipart-png 1:0.18+dfsg-19
SKIMAGE = Path("/work/shared/images/skimage")  # scikit-image's sample images
OPENCLIPART_LICENCE = "Public Domain Dedication (Open Clip Art Library; Debian package openclipart-png 1:0.18+dfsg-19)"
SOURCES = {  # class -> (source file, licence)
    "cat": (SKIMAGE / "chelsea.png", "CC0, photograph by Stefan van der Walt (scikit-image `chelsea`)"),
    "drinking_sipping": (SKIMAGE / "coffee.png", "CC0, photograph by Rachel Michetti (scikit-image `coffee`)"),
    "dog": (OPENCLIPART / "animals/mammals/dogs/black_lab_ganson.png", OPENCLIPART_LICENCE),
    "rooster": (OPENCLIPART / "animals/birds/gallo_di_profilo_archite_01.png", OPENCLIPART_LICENCE),
    "pig": (OPENCLIPART / "animals/mammals/pig_marcelo_caiafa1.png", OPENCLIPART_LICENCE),
    "cow": (OPENCLIPART / "animals/mammals/vacca_pezzata_rossa_val_01.png", OPENCLIPART_LICENCE),
    "frog": (OPENCLIPART / "animals/red-eye_frog_mirko_maisc_01.png", OPENCLIPART_LICENCE),
    "hen": (OPENCLIPART / "animals/birds/hen_01.png", OPENCLIPART_LICENCE),
    "insects": (OPENCLIPART / "animals/bugs/bee1_mimooh_01.png", OPENCLIPART_LICENCE),
    "sheep": (OPENCLIPART / "animals/mammals/sheep-md-v0.1.png", OPENCLIPART_LICENCE),
    "crow": (OPENCLIPART / "animals/birds/crow_01.png", OPENCLIPART_LICENCE),
    "crickets": (OPENCLIPART / "animals/bugs/cavalletta_architetto_fr_01.png", OPENCLIPART_LICENCE),
    "chirping_birds": (OPENCLIPART / "animals/birds/uccello_profilo_01_archi_01.png", OPENCLIPART_LICENCE),
    "rain": (OPENCLIPART / "signs_and_symbols/weather/rain.png", OPENCLIPART_LICENCE),
    "thunderstorm": (OPENCLIPART / "signs_and_symbols/weather/storm.png", OPENCLIPART_LICENCE),
    "water_drops": (OPENCLIPART / "signs_and_symbols/weather/drop_peterm_01.png", OPENCLIPART_LICENCE),
    "crackling_fire": (OPENCLIPART / "recreation/party/fire_valessio_soares_de_.png", OPENCLIPART_LICENCE),
    "pouring_water": (OPENCLIPART / "food/beverages/ice_water_ganson.png", OPENCLIPART_LICENCE),
    "crying_baby": (OPENCLIPART / "people/baby_anthony_liekens_01.png", OPENCLIPART_LICENCE),
    "clapping": (OPENCLIPART / "people/bodypart/hands_lorenzo_luengo_01.png", OPENCLIPART_LICENCE),
    "footsteps": (OPENCLIPART / "recreation/holiday/footprints_in_sand_ganson.png", OPENCLIPART_LICENCE),
    "laughing": (OPENCLIPART / "people/bodypart/mouth_-_body_part_nicu_b_01.png", OPENCLIPART_LICENCE),
    "brushing_teeth": (OPENCLIPART / "tools/toothbrush_and_paste_ganson.png", OPENCLIPART_LICENCE),
    "snoring": (OPENCLIPART / "people/camper_sleeping_ganson.png", OPENCLIPART_LICENCE),
    "mouse_click": (OPENCLIPART / "computer/mouse_the_structorr_.png", OPENCLIPART_LICENCE),
    "keyboard_typing": (OPENCLIPART / "computer/hardware/keyboard_01.png", OPENCLIPART_LICENCE),
    "can_opening": (OPENCLIPART / "food/beverages/pop_can_bw.png", OPENCLIPART_LICENCE),
    "vacuum_cleaner": (OPENCLIPART / "tools/blue_vacuum_cleaner_jaim_01.png", OPENCLIPART_LICENCE),
    "clock_alarm": (OPENCLIPART / "signs_and_symbols/clocks/alarm_clock_mike_powers_.png", OPENCLIPART_LICENCE),
    "clock_tick": (OPENCLIPART / "signs_and_symbols/clocks/orologio_da_parete_archi_01.png", OPENCLIPART_LICENCE),
    "glass_breaking": (OPENCLIPART / "recreation/party/wine_glass_christian_h._.png", OPENCLIPART_LICENCE),
    "chainsaw": (OPENCLIPART / "unsorted/motosega.png", OPENCLIPART_LICENCE),
    "siren": (OPENCLIPART / "people/fire_engine_mimooh_01.png", OPENCLIPART_LICENCE),
    "car_horn": (OPENCLIPART / "transportation/redcar_marcelo_caiafa_.png", OPENCLIPART_LICENCE),
    "engine": (OPENCLIPART / "transportation/truck_jarno_vasamaa1.png", OPENCLIPART_LICENCE),
    "train": (OPENCLIPART / "recreation/toys/kiddy_train_orlando_kara_.png", OPENCLIPART_LICENCE),
    "church_bells": (OPENCLIPART / "recreation/holiday/christmas/jingle_bells_01.png", OPENCLIPART_LICENCE),
    "airplane": (OPENCLIPART / "transportation/vehicles/aircraft_jarno_vasamaa1.png", OPENCLIPART_LICENCE),
    "fireworks": (OPENCLIPART / "recreation/holiday/fireworks_ganson2.png", OPENCLIPART_LICENCE),
    "hand_saw": (OPENCLIPART / "tools/saw_peterm_.png", OPENCLIPART_LICENCE),
}
GENERATED_NAME = "generated.png"


def seed_image_paths(name: str, seed_dir: Path = SEED_DIR) -> list[Path]:
    folder = Path(seed_dir) / name
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def seed_image_path(name: str, seed_dir: Path = SEED_DIR) -> Path:
    """The image `name` dreams from: a picture if there is one, else the generated one."""
    from models.dream import SeedImageError

    paths = seed_image_paths(name, seed_dir)
    if not paths:
        raise SeedImageError(f"{Path(seed_dir) / name}: no seed image for class {name!r}; add a PNG/JPG there, "
                             f"or generate one with `hear-and-see seeds generate {name}`")
    pictures = [p for p in paths if p.name != GENERATED_NAME]
    return (pictures or paths)[0]


def seed_classes(seed_dir: Path = SEED_DIR) -> list[str]:
    return sorted(p.name for p in Path(seed_dir).iterdir() if p.is_dir() and seed_image_paths(p.name, seed_dir))


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


def _clip_art_square(path: Path, max_side: int = MAX_SIDE, margin: float = 0.08):
    """Lay on white, crop to the drawing (many clip-art files are a small figure on an A4 page), pad square."""
    from PIL import Image

    from models.dream import load_seed_image

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


def collect(seed_dir: Path = SEED_DIR) -> list[Path]:
    """Copy every picture in SOURCES into seed_dir/<class>/ (small PNGs) and rewrite the pictures' credits."""
    from PIL import Image

    from models.dream import load_seed_image

    written = []
    for name, (src, _) in SOURCES.items():
        folder = Path(seed_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        if src.parent == SKIMAGE:  # photographs: keep the frame, only make them small (JPEG: a tenth of a PNG)
            im = Image.fromarray(load_seed_image(src))
            im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
            out = folder / (src.stem + ".jpg")
            im.save(out, quality=92)
        else:
            out = folder / (src.stem + ".png")
            _clip_art_square(src).save(out, optimize=True)
        written.append(out)
    write_credits(seed_dir)
    return written


def write_credits(seed_dir: Path = SEED_DIR) -> Path:
    lines = ["# Seed image credits", "",
             "Every image under `seed_images/` is listed here with its source and licence. Pictures were cropped,",
             "padded square and resized (at most 448 px a side) by `python -m models.seeds collect`; images named",
             f"`{GENERATED_NAME}` were generated by this project (`python -m models.seeds generate`) and contain no",
             "third-party material.", "",
             "| class | file | source | licence |", "|---|---|---|---|"]
    for name in seed_classes(seed_dir):
        for path in seed_image_paths(name, seed_dir):
            rel = path.relative_to(seed_dir).as_posix()
            if path.name == GENERATED_NAME:
                idx, label = ESC50_TO_IMAGENET[name]
                lines.append(f"| {name} | {rel} | generated: gradient ascent on ImageNet class {idx} ({label}) of "
                             f"efficientnet_lite0 from smooth noise | project's own work, same licence as the code |")
            elif name in SOURCES and SOURCES[name][0].stem == path.stem:
                src, licence = SOURCES[name]
                where = (f"scikit-image sample data, `{src.name}`" if src.parent == SKIMAGE
                         else f"Open Clip Art Library, `{src.relative_to(OPENCLIPART).as_posix()}`")
                lines.append(f"| {name} | {rel} | {where} | {licence} |")
            else:
                lines.append(f"| {name} | {rel} | UNKNOWN: add its source here | UNKNOWN |")
    out = Path(seed_dir) / "CREDITS.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def generate_missing(classes: list[str], size: int = 224, seed_dir: Path = SEED_DIR, backbone=None) -> list[Path]:
    from PIL import Image

    from models.backbones import create_backbone

    from models.dream import _to_tensor

    backbone = (backbone or create_backbone("efficientnet_lite0", pretrained=True)).eval()
    device = next(backbone.parameters()).device
    written = []
    for name in classes:
        idx, _ = ESC50_TO_IMAGENET[name]
        best = (-1.0, None)
        for attempt in range(3):  # some starts climb to a neighbouring class; keep the one the head believes most
            img = generate_seed(backbone, idx, size, seed=attempt)
            with torch.no_grad():
                p = backbone(_to_tensor(img, 224, device)).softmax(-1)[0, idx].item()
            best = max(best, (p, img), key=lambda b: b[0])
            if p >= 0.5:
                break
        folder = Path(seed_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(best[1]).save(folder / GENERATED_NAME, optimize=True)
        written.append(folder / GENERATED_NAME)
    write_credits(seed_dir)
    return written


def seeds_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.seeds", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("collect", help="rebuild seed_images/ from the listed public-domain/CC0 sources")
    gen = sub.add_parser("generate", help="generate seeds from the ImageNet head")
    gen.add_argument("classes", nargs="*", help="classes (default: every ESC-50 class without a seed image)")
    gen.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    if args.command == "collect":
        paths = collect()
    else:
        classes = args.classes or [c for c in ESC50_TO_IMAGENET if not seed_image_paths(c)]
        unknown = [c for c in classes if c not in ESC50_TO_IMAGENET]
        if unknown:
            p.error(f"no ImageNet class mapped for {unknown}; add them to ESC50_TO_IMAGENET")
        paths = generate_missing(classes, args.size)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(seeds_main())
