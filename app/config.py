"""Venue settings: one TOML file, every key optional, command-line flags on top. Defaults work with no file.

Example venue.toml (every key is a field of Settings below):

    mode = "gallery"            # "default", "gallery", "toy" or "performance"
    classes = "animals"         # "all", a set name (animals, natural, human, domestic, urban) or a list
    server = "tcp://127.0.0.1:5555"
    hop_seconds = 0.5
    min_confidence = 0.4
    speech = "ignore"           # talking shows nothing; "show": it is shown as the class "speech"
    fullscreen = true
    exit_chord = "ctrl+shift+q" # the only key that ends the gallery mode
    osc_port = 9000             # OSC control (performance mode); 0 turns it off
    taught_dir = "/srv/venue/taught"  # the venue's taught sounds (default: ~/.local/share/hear-and-see/taught)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

from app.controls import parse_chord
from common.paths import PRERENDERED, SEED_IMAGES, default_taught_dir
from models.gate import GateSettings

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


class ConfigError(ValueError):
    """An unreadable or wrong venue file; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Settings:
    mode: str = "default"
    classes: str | list[str] = "all"
    server: str = "tcp://127.0.0.1:5555"
    hop_seconds: float = 0.5
    # The gate (models/gate.py says what each does); defaults defined once, there.
    silence_dbfs: float = GateSettings.silence_dbfs
    min_confidence: float = GateSettings.min_confidence
    enter_windows: int = GateSettings.enter_windows
    hold_seconds: float = GateSettings.hold_seconds
    speech: str = GateSettings.speech
    floor_margin_db: float = GateSettings.floor_margin_db
    checkpoint: str | None = None        # None: the shipped model
    backbone: str | None = None          # None: whatever the checkpoint was trained on
    dream_layer: str | None = None
    dream_size: int = 0                  # the dream's short side in pixels; 0: the server machine's profile
    seeds_dir: str = str(SEED_IMAGES)
    taught_dir: str = str(default_taught_dir())  # the venue's taught sounds (`hear-and-see teach`)
    prerendered_dir: str = str(PRERENDERED)
    width: int = 1280
    height: int = 720
    fullscreen: bool = False
    hide_cursor: bool = False
    show_hud: bool = True
    label_style: str = "bars"            # "bars": class and confidences; "big": the name, large (children)
    palette: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignette: float = 0.35
    zoom_rate: float = 0.05              # the renderer's log-zoom per second between keyframes
    # How hard the server dreams: a scale on its intensity (which is the classifier's confidence) and the
    # pull back toward the seed image per keyframe (None: the engine's own).
    dream_intensity: float = 1.0
    dream_blend: float | None = None
    exit_chord: str = "ctrl+shift+q"     # quits in every mode; in the gallery nothing else does
    osc_port: int = 0                    # UDP port for OSC control; 0: none
    osc_host: str = "127.0.0.1"          # loopback: only this machine may freeze or black out the show


# The modes, and what each changes unless the venue file says otherwise.
MODE_DEFAULTS = {
    "default": {},
    "gallery": {"fullscreen": True, "hide_cursor": True, "show_hud": False},
    "toy": {"classes": "animals", "hold_seconds": 4.0, "min_confidence": 0.3, "label_style": "big",
            "dream_intensity": 0.7, "seeds_dir": str(SEED_IMAGES / "toy"), "prerendered_dir": str(PRERENDERED / "toy")},
    "performance": {"hop_seconds": 0.25, "hold_seconds": 0.5, "osc_port": 9000, "enter_windows": 1},
}
MODES = tuple(MODE_DEFAULTS)
MAX_HOP_SECONDS = 4.0  # the model's window: a longer hop would leave sound between windows unheard


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
    where = path or "command line"
    if not 0.05 <= settings.hop_seconds <= MAX_HOP_SECONDS:
        raise ConfigError(f"{where}: hop_seconds must be within 0.05..{MAX_HOP_SECONDS}, got {settings.hop_seconds}")
    from visualizer.hud import STYLES  # here, not at the top: `--help` and `devices` need no pygame

    if settings.label_style not in STYLES:
        raise ConfigError(f"{where}: label_style must be one of {', '.join(STYLES)}, "
                          f"got {settings.label_style!r}")
    if not 0.0 <= settings.floor_margin_db <= 40.0:
        raise ConfigError(f"{where}: floor_margin_db must be within 0..40 dB (0: off), got {settings.floor_margin_db}")
    try:
        gate_settings(settings)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not 0.0 <= settings.dream_intensity <= 1.0:
        raise ConfigError(f"{where}: dream_intensity must be within 0..1, got {settings.dream_intensity}")
    blend = settings.dream_blend
    if blend is not None and not (isinstance(blend, (int, float)) and not isinstance(blend, bool) and 0 < blend <= 1):
        raise ConfigError(f"{where}: dream_blend must be a number within 0..1 (or left out), "
                          f"got {blend!r}")
    if not 0 <= settings.osc_port <= 65535:
        raise ConfigError(f"{where}: osc_port must be 0 (off) or a UDP port, got {settings.osc_port}")
    try:
        parse_chord(settings.exit_chord)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
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


def gate_settings(settings: Settings) -> GateSettings:
    """The venue's gate, field by field by name."""
    return GateSettings(**{f.name: getattr(settings, f.name) for f in fields(GateSettings) if hasattr(settings, f.name)})
