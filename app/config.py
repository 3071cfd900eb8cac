"""Venue settings: one TOML file, every key optional, command-line flags on top. Defaults work with no file.

Example venue.toml (every key is a field of Settings below):

    mode = "gallery"            # "default", "gallery", "toy" or "performance"
    classes = "animals"         # "all", a set name (animals, natural, human, domestic, urban) or a list
    server = "tcp://127.0.0.1:5555"
    hop_seconds = 0.5
    min_confidence = 0.35
    fullscreen = true
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_RECORDING = REPO_ROOT / "app" / "demo_audio"  # a folder: played in name order


class ConfigError(ValueError):
    """An unreadable or wrong venue file; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Settings:
    mode: str = "default"
    classes: str | list[str] = "all"
    server: str = "tcp://127.0.0.1:5555"
    hop_seconds: float = 0.5
    window_seconds: float = 4.0          # fixed by the model; here so a venue file can state it explicitly
    silence_dbfs: float = -55.0
    min_confidence: float = 0.35
    enter_windows: int = 1
    hold_seconds: float = 2.0
    checkpoint: str | None = None        # None: the shipped model
    backbone: str | None = None          # None: whatever the checkpoint was trained on
    dream_layer: str | None = None
    dream_size: int = 224
    seeds_dir: str = str(REPO_ROOT / "seed_images")
    prerendered_dir: str = str(REPO_ROOT / "prerendered")
    width: int = 1280
    height: int = 720
    fullscreen: bool = False
    show_hud: bool = True
    palette: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignette: float = 0.35


MODES = ("default", "gallery", "toy", "performance")
# What each mode changes, unless the venue file says otherwise.
MODE_DEFAULTS = {
    "default": {},
    "gallery": {"fullscreen": True, "show_hud": False},
    "toy": {"classes": "animals", "hold_seconds": 4.0, "min_confidence": 0.3},
    "performance": {"hop_seconds": 0.25, "hold_seconds": 0.5},
}


def load_settings(path: str | Path | None = None, **overrides) -> Settings:
    """Settings from defaults, then the mode's defaults, then the file, then `overrides` (None means unset)."""
    values: dict = {}
    if path is not None:
        values = _read_toml(Path(path))
    overrides = {k: v for k, v in overrides.items() if v is not None}
    mode = overrides.get("mode", values.get("mode", "default"))
    if mode not in MODES:
        raise ConfigError(f"{path or 'command line'}: mode {mode!r} is not one of {', '.join(MODES)}")
    merged = {**MODE_DEFAULTS[mode], **values, **overrides}
    if "palette" in merged:
        merged["palette"] = tuple(merged["palette"])
    settings = replace(Settings(), **merged)
    if settings.window_seconds != 4.0:
        raise ConfigError(f"{path}: window_seconds is fixed at 4.0 by the model, got {settings.window_seconds}")
    if not 0.05 <= settings.hop_seconds <= settings.window_seconds:
        raise ConfigError(f"{path or 'command line'}: hop_seconds must be within 0.05..4.0, got {settings.hop_seconds}")
    return settings


def _read_toml(path: Path) -> dict:
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: venue file not found; leave out --config to use the defaults") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML file ({exc}); fix the line it names") from exc
    known = {f.name: f for f in fields(Settings)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown setting {key!r}; known settings: {', '.join(known)}")
        default = getattr(Settings(), key)
        if isinstance(default, (bool, int, float)) and not _same_kind(value, default):
            raise ConfigError(f"{path}: {key} must be a {type(default).__name__}, got {value!r}")
    return values


def _same_kind(value, default) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    return isinstance(value, (int, float)) if isinstance(default, float) else type(value) is type(default)
