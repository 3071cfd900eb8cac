"""Venue settings: one TOML file, every key optional, command-line flags on top. Defaults work with no file.

Example venue.toml (every key is a field of Settings below; RULES says what each takes):

    mode = "gallery"            # "default", "gallery", "toy" or "performance"
    classes = "animals"         # "all", a set name (animals, natural, human, domestic, urban, farm) or a list
    server = "tcp://192.168.1.20:5555"   # "auto" (the default): start a server on this machine
    # servers = ["tcp://192.168.1.20:5555", "tcp://192.168.1.21:5555"]  # several: docs/venue.md
    # servers = ["mdns"]        # those that `serve --advertise` on the local network (DNS-SD); with addresses too
    hop_seconds = 0.5
    min_confidence = 0.4
    speech = "ignore"           # talking shows nothing; "show": it is shown as the class "speech"
    fullscreen = true
    exit_chord = "ctrl+shift+q" # the only key that ends the gallery mode
    osc_port = 9000             # OSC control (performance mode); 0 turns it off
    taught_dir = "/srv/venue/taught"  # the venue's taught sounds (`hear-and-see teach`); default: the user's data folder
    console_port = 8080         # the web console (docs/kiosk.md); 0 (the default) turns it off
    hours = "mon-fri 10:00-18:00, sat-sun 12:00-17:00"  # opening hours; "" (the default): always open

Every value is checked where it enters, by its rule: a wrong one is one line naming the file, the key, what
it got and what it takes (ConfigError), before anything starts. The command line's flags use the same rules.
"""
from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from app.controls import ZOOM_RANGE, parse_chord
from common.errors import UserError
from common.paths import PRERENDERED, SEED_IMAGES, default_taught_dir
from models.classes import AUDIOSET_CLASSES, CLASS_SETS, ESC50_CLASSES, TAUGHT_SET  # plain lists: no torch with them
from models.gate import SPEECH_POLICIES, GateSettings

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


class ConfigError(UserError, ValueError):
    """An unreadable or wrong venue file or flag; the message names the file or flag, the key and the fix."""


@dataclass(frozen=True)
class Settings:
    mode: str = "default"
    classes: str | list[str] = "all"
    server: str = "auto"                 # where `run` is heard and dreamt; "auto": a server it starts itself
    servers: tuple[str, ...] = ()        # several servers (instead of `server`): the least loaded that answers;
                                         # "mdns" among them: also those found on the local network (DNS-SD)
    server_key: str | None = None        # the servers' CurveZMQ public key: a kiosk connects to no other server
    kiosk_key: str | None = None         # this kiosk's CurveZMQ secret key file (`hear-and-see keys --kiosks N`)
    bind: str = "tcp://127.0.0.1:5555"   # where `serve` listens
    kiosk_keys: str | None = None        # `serve`: the folder of kiosk public keys it admits; no other kiosk gets in
    advertise: bool = False              # `serve`: announce itself on the local network, for kiosks' "mdns"
    hop_seconds: float = 0.5
    # The gate (models/gate.py says what each does); defaults defined once, there.
    silence_dbfs: float = GateSettings.silence_dbfs
    min_confidence: float = GateSettings.min_confidence
    enter_windows: int = GateSettings.enter_windows
    sure_confidence: float = GateSettings.sure_confidence
    taught_confidence: float | None = GateSettings.taught_confidence
    hold_seconds: float = GateSettings.hold_seconds
    speech: str = GateSettings.speech
    floor_margin_db: float = GateSettings.floor_margin_db
    checkpoint: str | None = None        # None: the shipped model
    backbone: str | None = None          # None: whatever the checkpoint was trained on
    dream_layer: str | None = None
    dream_size: int = 0                  # the dream's short side in pixels; 0: the server machine's profile
    seeds_dir: str = str(SEED_IMAGES)
    taught_dir: str = str(default_taught_dir())  # the venue's taught sounds (models/taught.py)
    prerendered_dir: str = str(PRERENDERED)
    width: int = 1280
    height: int = 720
    fullscreen: bool = False
    hide_cursor: bool = False
    show_hud: bool = True
    label_style: str = "bars"            # "bars": class and confidences; "big": the name, large (children)
    palette: str | tuple[float, float, float] = "neutral"   # a name of visualizer.renderer.PALETTES, or RGB
    vignette: float = 0.35
    zoom_rate: float = 0.05              # the renderer's log-zoom per second between keyframes
    # How hard the server dreams: a scale on its intensity (which is the classifier's confidence) and the
    # pull back toward the seed image per keyframe (None: the engine's own).
    dream_intensity: float = 1.0
    dream_blend: float | None = None
    dream_batch: int = 0                 # kiosks' dream steps in one batch at most; 0: the server's device decides
    hear_batch: int = 0                  # kiosks' windows heard in one pass at most; 0: the server's default (1)
    exit_chord: str = "ctrl+shift+q"     # quits in every mode; in the gallery nothing else does
    osc_port: int = 0                    # UDP port for OSC control; 0: none
    osc_host: str = "127.0.0.1"          # loopback: only this machine may freeze or black out the show
    console_port: int = 0                # TCP port of the web console (app/console.py); 0: none
    console_host: str = "127.0.0.1"      # loopback: no password; any other address needs console_password_hash
    console_password_hash: str | None = None  # `hear-and-see console-password` writes it
    hours: str = ""                      # opening hours (app/hours.py); "": always open


# The modes, and what each changes unless the venue file says otherwise.
MODE_DEFAULTS = {
    "default": {},
    "gallery": {"fullscreen": True, "hide_cursor": True, "show_hud": False},
    # The toy: a sound's first look hears little of it. Among its ten animals, two windows in a row at 0.3 (or one
    # at 0.6) showed another animal first for 18 % of held-out events; two at 0.6 (or one at 0.7) for 9 %, the
    # right one still a median 0.55 s after the onset. A child's own taught sounds are less sure of themselves and
    # keep 0.3 (BENCHMARKS.md, "The first label of a sound").
    "toy": {"classes": "animals", "hold_seconds": 4.0, "min_confidence": 0.6, "enter_windows": 2,
            "sure_confidence": 0.7, "taught_confidence": 0.3, "label_style": "big",
            "dream_intensity": 0.7, "seeds_dir": str(SEED_IMAGES / "toy"), "prerendered_dir": str(PRERENDERED / "toy")},
    "performance": {"hop_seconds": 0.25, "hold_seconds": 0.5, "osc_port": 9000, "enter_windows": 1},
}
MODES = tuple(MODE_DEFAULTS)
MAX_HOP_SECONDS = 4.0  # the model's window: a longer hop would leave sound between windows unheard


# --- rules: what each value takes ---------------------------------------------------------------------------
# A rule is a function that returns the value as the program uses it, or raises ValueError; `takes` is what
# a message says it takes.

class Takes(ValueError):
    """Raised by a rule's parse that says for itself what it takes."""


@dataclass(frozen=True)
class Rule:
    parse: Callable[[object], object]
    takes: str

    def __call__(self, value):
        try:
            return self.parse(value)
        except Takes:
            raise
        except (ValueError, TypeError, KeyError):
            raise ValueError(self.takes) from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(low: float, high: float, *, above_low: bool = False) -> Rule:
    """A number within low..high (`above_low`: low itself excluded)."""
    def parse(value):
        if not _is_number(value) or value != value or not (low < value if above_low else low <= value) \
                or not value <= high:
            raise ValueError
        return float(value)
    return Rule(parse, f"a number above {low:g} up to {high:g}" if above_low else f"a number within {low:g}..{high:g}")


def integer(low: int, high: int) -> Rule:
    def parse(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError
        return value
    return Rule(parse, f"a whole number within {low}..{high}")


def choice(*allowed: str) -> Rule:
    def parse(value):
        if value not in allowed:
            raise ValueError
        return value
    return Rule(parse, f"one of {', '.join(map(str, allowed))}")


def boolean() -> Rule:
    def parse(value):
        if not isinstance(value, bool):
            raise ValueError
        return value
    return Rule(parse, "true or false")


def optional(rule: Rule, absent: str) -> Rule:
    return Rule(lambda value: None if value is None else rule(value), f"{rule.takes} (or leave it out: {absent})")


def _address(value) -> str:
    url = urlparse(value)
    if url.scheme == "tcp":
        if not url.hostname or url.port is None or url.path not in ("", "/"):
            raise ValueError
    elif url.scheme != "ipc" or not url.path:
        raise ValueError
    return value


ADDRESS = Rule(_address, "a ZeroMQ address: tcp://HOST:PORT or ipc:///path")


DISCOVER = "mdns"  # a server entry that stands for those found on the local network (common/discovery.py)


def _server_address(value) -> str:
    return value if value == DISCOVER else _address(value)


SERVER_ADDRESS = Rule(_server_address, f"a ZeroMQ address: tcp://HOST:PORT or ipc:///path, or '{DISCOVER}': the "
                                       f"servers found on the local network")


def _server(value) -> str:
    return value if value == "auto" else _server_address(value)


def _servers(value) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 64 or len(set(value)) != len(value):
        raise ValueError
    return tuple(_server_address(v) for v in value)


def _class_set(value):
    known = set(ESC50_CLASSES) | set(AUDIOSET_CLASSES)
    if isinstance(value, str):
        if value not in ("all", TAUGHT_SET) and value not in CLASS_SETS:
            raise ValueError
        return value
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c in known for c in value):
        raise ValueError
    return value


def _palette(value) -> str | tuple[float, float, float]:
    from visualizer.renderer import PALETTES  # here, not at the top: `--help` and `devices` need no GL

    if isinstance(value, str) and value in PALETTES:
        return value
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(c) and 0 <= c <= 2 for c in value):
        raise Takes(f"one of {', '.join(PALETTES)}, or three numbers within 0..2 (an RGB multiplier), "
                    f"e.g. [1.0, 0.9, 0.8]")
    return tuple(float(c) for c in value)


def path(kind: str = "path", takes: str | None = None) -> Rule:
    """A path (`~` expanded); kind "file", "folder" or "file or folder" must exist as one."""
    exists = {"file": "is_file", "folder": "is_dir", "file or folder": "exists", "path": None}[kind]

    def parse(value):
        if not isinstance(value, str) or not value or (exists and not getattr(Path(value).expanduser(), exists)()):
            raise ValueError
        return str(Path(value).expanduser())
    return Rule(parse, takes or (f"an existing {kind}" if exists else "a path"))


def _text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError
    return value


def _chord(value) -> str:
    parse_chord(value)
    return value


def _label_style(value) -> str:
    from visualizer.hud import STYLES  # here, not at the top: `--help` and `devices` need no pygame

    if value not in STYLES:
        raise Takes(f"one of {', '.join(STYLES)}")
    return value


def _ip(value) -> str:
    ipaddress.ip_address(value)
    return value


def _password_hash(value) -> str:
    from app.passwords import is_password_hash

    if not is_password_hash(value):
        raise ValueError
    return value


def _hours(value) -> str:
    from app.hours import parse_hours

    if not isinstance(value, str):
        raise ValueError
    try:
        parse_hours(value)
    except ValueError as exc:
        raise Takes(str(exc)) from None
    return value


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


RULES: dict[str, Rule] = {
    "mode": choice(*MODES),
    "classes": Rule(_class_set, f"'all', 'taught' (the taught sounds alone), one of {', '.join(sorted(CLASS_SETS))}, "
                                f"or a list of class names (ESC-50's, or {', '.join(AUDIOSET_CLASSES)}); the taught sounds join every set"),
    "server": Rule(_server, f"'auto', a ZeroMQ address (tcp://HOST:PORT or ipc:///path) or '{DISCOVER}' (found on "
                            f"the local network)"),
    "servers": Rule(_servers, f"a list of up to 64 different ZeroMQ addresses, e.g. [\"tcp://a:5555\", \"tcp://b:5555\"]; "
                              f"\"{DISCOVER}\" among them adds the servers found on the local network"),
    "server_key": optional(path("file", "an existing CurveZMQ public key file"), "no encryption"),
    "kiosk_key": optional(path("file", "an existing CurveZMQ secret key file"), "a fresh key per connection"),
    "bind": ADDRESS,
    "advertise": boolean(),
    "kiosk_keys": optional(path("folder", "an existing folder of kiosk public keys"), "any kiosk with the server key"),
    "hop_seconds": number(0.05, MAX_HOP_SECONDS),
    "silence_dbfs": number(-120.0, 0.0),
    "min_confidence": number(0.0, 1.0),
    "enter_windows": integer(1, 20),
    "sure_confidence": number(0.0, 1.0),
    "taught_confidence": optional(number(0.0, 1.0), "min_confidence's"),
    "hold_seconds": number(0.0, 600.0),
    "speech": choice(*SPEECH_POLICIES),
    "floor_margin_db": Rule(number(0.0, 40.0).parse, "a number within 0..40 dB (0: off)"),
    "checkpoint": optional(path("file", "an existing checkpoint file"), "the shipped model"),
    "backbone": optional(Rule(_text, "a backbone name"), "the checkpoint's own"),
    "dream_layer": optional(Rule(_text, "a layer name of the dream network"), "the engine's own"),
    "dream_size": Rule(lambda v: 0 if v == 0 else integer(64, 2160)(v), "0 (the machine's profile) or a whole "
                                                                         "number of pixels within 64..2160"),
    "seeds_dir": path("folder", "an existing folder of seed images, a folder per class"),
    "prerendered_dir": path(),
    "taught_dir": path(takes="a folder path (made when the first sound is taught)"),
    "width": integer(64, 7680),
    "height": integer(64, 4320),
    "fullscreen": boolean(),
    "hide_cursor": boolean(),
    "show_hud": boolean(),
    "label_style": Rule(_label_style, "a label style of the HUD"),
    "palette": Rule(_palette, "a palette's name, or three numbers within 0..2"),
    "vignette": number(0.0, 1.0),
    "zoom_rate": number(*ZOOM_RANGE),
    "dream_intensity": number(0.0, 1.0),
    "dream_blend": optional(number(0.0, 1.0, above_low=True), "no pull back to the seed"),
    "dream_batch": Rule(integer(0, 64).parse, "0 (the device's default) or a whole number of kiosks within 1..64"),
    "hear_batch": Rule(integer(0, 64).parse, "0 (the server's default) or a whole number of windows within 1..64"),
    "exit_chord": Rule(_chord, "modifiers then one key, e.g. 'ctrl+shift+q'"),
    "osc_port": integer(0, 65535),
    "osc_host": Rule(_ip, "an IP address, e.g. 127.0.0.1"),
    "console_port": integer(0, 65535),
    "console_host": Rule(_ip, "an IP address, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every network)"),
    "console_password_hash": optional(Rule(_password_hash, "a hash written by `hear-and-see console-password`"),
                                      "no password: the console answers on loopback only"),
    "hours": Rule(_hours, "opening hours, e.g. \"10:00-18:00\" or \"mon-fri 10:00-18:00, sat 12:00-16:00\""),
}
assert set(RULES) == {f.name for f in fields(Settings)}, "every setting has a rule"


def check(key: str, value, where: str):
    """`value` as `key` takes it, or ConfigError: 'WHERE: KEY = VALUE: takes ...'."""
    try:
        return RULES[key](value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key} = {value!r}: takes {exc}") from None


def load_settings(path: str | Path | None = None, **overrides) -> Settings:
    """Settings from defaults, then the mode's defaults, then the file, then `overrides` (None means unset),
    each value checked by its rule."""
    values = _read_toml(Path(path)) if path is not None else {}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    where = str(path) if path is not None else "command line"
    mode = check("mode", overrides.get("mode", values.get("mode", "default")), where)
    merged = {**MODE_DEFAULTS[mode], **values, **overrides}
    settings = replace(Settings(), **{key: check(key, value, where) for key, value in merged.items()})
    if settings.console_port and not is_loopback(settings.console_host) and not settings.console_password_hash:
        raise ConfigError(f"{where}: console_host = {settings.console_host!r} reaches beyond this machine: set a "
                          f"password first (`hear-and-see console-password --config FILE`), or use 127.0.0.1")
    return settings


def save_setting(path: str | Path, key: str, value) -> None:
    """Write one setting into the venue file (made if missing), keeping its comments, atomically: a reader sees
    the old file or the new, never half of one. The new file must load, or nothing is written (ConfigError)."""
    import os
    import tempfile

    import tomlkit

    path = Path(path)
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as exc:
        raise ConfigError(f"{path}: not a readable TOML file ({exc}); fix the line it names") from exc
    if value is None:  # TOML has no null: a setting left out takes its default
        document.pop(key, None)
    else:
        document[key] = list(value) if isinstance(value, tuple) else value
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(tomlkit.dumps(document))
            f.flush()
            os.fsync(f.fileno())
        try:
            load_settings(temporary)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(temporary, str(path))) from None
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _read_toml(path: Path) -> dict:
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: venue file not found; leave out --config to use the defaults") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML file ({exc}); fix the line it names") from exc
    unknown = [key for key in values if key not in RULES]
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}; known settings: {', '.join(RULES)}")
    if "server" in values and "servers" in values:
        raise ConfigError(f"{path}: both server and servers are set; keep one (servers takes a list)")
    return values


def server_addresses(settings: Settings) -> tuple[str, ...]:
    """Where the kiosk is heard and dreamt: `servers` when set (a flag sets it too), else `server`; none: "auto",
    a server the app starts on this machine."""
    if settings.servers:
        return settings.servers
    return () if settings.server == "auto" else (settings.server,)


def gate_settings(settings: Settings) -> GateSettings:
    """The venue's gate, field by field by name."""
    return GateSettings(**{f.name: getattr(settings, f.name) for f in fields(GateSettings) if hasattr(settings, f.name)})


def dream_settings(settings: Settings):
    """The venue's dream, as the server takes it."""
    from inference_server.server import DreamSettings  # here: the app process never loads torch

    return DreamSettings(layer=settings.dream_layer, size=settings.dream_size, intensity=settings.dream_intensity,
                         blend=settings.dream_blend, aspect=settings.width / settings.height, batch=settings.dream_batch)
