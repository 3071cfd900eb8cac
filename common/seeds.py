"""Which picture a class dreams from: the one rule, read by the server, `prerender` and the fallback alike."""
from __future__ import annotations

from pathlib import Path

from common.paths import IMAGE_SUFFIXES

GENERATED_NAME = "generated.png"  # a picture the network made itself: used only where a class has no other


def seed_pictures(folder: str | Path) -> list[Path]:
    """The pictures in a class's folder, in name order; dot files are a writer's unfinished work."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def seed_image(folder: str | Path) -> Path | None:
    """A class's seed: the first picture in name order, the generated one only where there is no other."""
    paths = seed_pictures(folder)
    pictures = [p for p in paths if p.name != GENERATED_NAME]
    return (pictures or paths or [None])[0]
