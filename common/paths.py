"""Where things are: what ships with the code, where it writes, and the data kept beside it. Each defined here only.

What ships (seed images, demo recordings, shaders, weights) lies beside the packages, in a checkout as in an
installed wheel (whose site-packages holds `seed_images/` next to `app/`), so it is found the same way in both.
What is written at run time goes to the checkout's own folders, or for an installed wheel to the user's data
folder (the platform's: $XDG_DATA_HOME/hear-and-see, by default ~/.local/share/hear-and-see, on Linux), never into
site-packages.
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

REPO_ROOT = Path(__file__).resolve().parent.parent  # the folder holding app/, common/, ...: a checkout or site-packages
CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()  # a clone (installed editable or not), not an installed wheel
DATA = REPO_ROOT if CHECKOUT else platformdirs.user_data_path("hear-and-see")  # where run-time output goes

SEED_IMAGES = REPO_ROOT / "seed_images"        # a folder per class: what the server dreams on
DEMO_AUDIO = REPO_ROOT / "app" / "demo_audio"  # the bundled recordings `make run` plays, in name order
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what counts as a picture in those folders
PRERENDERED = DATA / "prerendered"  # `hear-and-see prerender` writes a folder per class; the fallback plays it
# Data that is never committed (ESC-50, source images): $HEAR_AND_SEE_SHARED, else ../shared next to a checkout,
# or the user's data folder's shared/ for an installed wheel.
SHARED = Path(os.environ.get("HEAR_AND_SEE_SHARED") or (REPO_ROOT.parent / "shared" if CHECKOUT else DATA / "shared"))


def default_taught_dir() -> Path:
    """Where a venue's taught sounds live unless its file says `taught_dir`: the user's data folder
    ($XDG_DATA_HOME/hear-and-see/taught, else ~/.local/share/hear-and-see/taught)."""
    return platformdirs.user_data_path("hear-and-see") / "taught"
