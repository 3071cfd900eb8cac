"""Where things are: the repository's folders, and the data kept next to it. Each defined here only."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED_IMAGES = REPO_ROOT / "seed_images"        # a folder per class: what the server dreams on
PRERENDERED = REPO_ROOT / "prerendered"        # `hear-and-see prerender` writes a folder per class; the fallback plays it
DEMO_AUDIO = REPO_ROOT / "app" / "demo_audio"  # the bundled recordings `make run` plays, in name order
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what counts as a picture in those folders
# Data that is never committed (ESC-50, source images): $HEAR_AND_SEE_SHARED, else ../shared next to the repo.
SHARED = Path(os.environ.get("HEAR_AND_SEE_SHARED", REPO_ROOT.parent / "shared"))


def default_taught_dir() -> Path:
    """Where a venue's taught sounds live unless its file says `taught_dir`: the user's data folder."""
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "hear-and-see" / "taught"
