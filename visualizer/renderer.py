"""Draws the dream: keyframes that keep zooming between arrivals, crossfades, grading and the HUD.

The renderer only draws. `show_frame` and `set_label` just record what to show, so they may be
called from any thread; textures are uploaded inside `draw`, on the thread owning the context.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import moderngl
import numpy as np
import pygame

from .fallback import default_frame
from .hud import HudPainter
from .upscale import to_screen

SHADERS = Path(__file__).with_name("shaders")
SOURCES = ("live", "prerendered", "seed")

# The zoom slows down over this many seconds, so a picture that stays up (a seed image, a
# stalled server) tops out at exp(zoom_rate * ZOOM_EASE_S) instead of magnifying forever.
# Keyframes come every 0.2-1 s, where the slowdown is a few percent and invisible.
ZOOM_EASE_S = 20.0
# Live keyframes' spacing, as the renderer estimates it to zoom at the dream's own speed: a running mean (this much
# of the old estimate kept per keyframe), each spacing clamped to a plausible range.
SPACING_MEMORY = 0.7
MIN_SPACING_S, MAX_SPACING_S = 0.1, 2.0
# A new class (or source) fades in over this long: one picture turning into the next within a second.
SCENE_FADE_S = 0.8
# How much a keyframe's own edges are steepened as it is enlarged to the screen (0: plain bicubic). Keyframes are
# 224-720 lines on a 720-1080 line screen; bicubic keeps them smooth, this keeps them crisp. No noise is added:
# only contrast that is in the picture is raised, and only at the scale the enlargement softens.
SHARPEN = 0.8


class Palette(NamedTuple):
    """Split toning per venue: the picture is multiplied by `shadows` in its dark parts and by
    `highlights` in its bright parts, blended in by `amount` (0 leaves it untouched)."""
    shadows: tuple[float, float, float]
    highlights: tuple[float, float, float]
    amount: float


PALETTES = {
    "neutral": Palette((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 0.0),
    "warm": Palette((1.0, 0.85, 0.7), (1.1, 1.0, 0.85), 0.8),
    "cool": Palette((0.75, 0.9, 1.1), (0.95, 1.0, 1.1), 0.8),
    "night": Palette((0.55, 0.6, 0.9), (0.8, 0.8, 0.95), 1.0),  # dimmer, for dark rooms
}


def _shader(name: str) -> str:
    return (SHADERS / name).read_text()


def _clip_rect(x: int, y: int, w: int, h: int, width: int, height: int) -> tuple[float, ...]:
    """A rectangle in screen pixels (top-left origin) as clip-space x0, y0, x1, y1."""
    return (2 * x / width - 1, 1 - 2 * (y + h) / height, 2 * (x + w) / width - 1, 1 - 2 * y / height)


class Renderer:
    """Draws into whatever framebuffer is bound when `draw(now)` is called.

    Every new keyframe starts a crossfade from a snapshot of what is on screen at that moment,
    so frames arriving faster than the fade, or mid-fade, never make the picture jump. A change
    of label or of source (live, prerendered, seed) fades slower, as a change of scene.
    """

    def __init__(self, ctx: moderngl.Context, width: int, height: int, *,
                 palette: str | Palette | tuple[float, float, float] = "neutral",
                 vignette: float = 0.35, hud_visible: bool = True, label_style: str = "bars",
                 zoom_rate: float, keyframe_fade_s: float = 0.4, scene_fade_s: float = SCENE_FADE_S,
                 sharpen: float = SHARPEN):
        self.ctx = ctx
        self.width, self.height = width, height
        self.palette = palette
        self.vignette = vignette
        self.hud_visible = hud_visible
        self.zoom_rate = zoom_rate  # log-zoom per second: 0.05 is 5 % per second
        self.keyframe_fade_s = keyframe_fade_s
        self.scene_fade_s = scene_fade_s
        self.sharpen = sharpen

        quad = ctx.buffer(np.array([0, 0, 1, 0, 0, 1, 1, 1], dtype="f4"))
        dream = ctx.program(vertex_shader=_shader("quad.vert"), fragment_shader=_shader("dream.frag"))
        dream["keyframe"] = 0
        dream["previous"] = 1
        dream["rect"] = (-1.0, -1.0, 1.0, 1.0)
        dream["aspect"] = width / height
        self._dream = ctx.vertex_array(dream, [(quad, "2f", "in_vert")])
        hud = ctx.program(vertex_shader=_shader("quad.vert"), fragment_shader=_shader("hud.frag"))
        self._hud = ctx.vertex_array(hud, [(quad, "2f", "in_vert")])

        # Two snapshots: the next one is rendered while the current one is still being sampled.
        self._snapshots = [ctx.framebuffer([self._texture((width, height), 4)]) for _ in range(2)]
        for snapshot in self._snapshots:
            snapshot.clear()
        self._keyframe: moderngl.Texture | None = None
        self._upload(self._screen_sized(default_frame("")))  # shown until the first frame
        self._start: float | None = None
        self._fade_s = 0.0
        self._pending: tuple[np.ndarray, str, float | None] | None = None
        self._rate = zoom_rate  # log-zoom per second of the picture now on screen
        self._last_step_at: float | None = None  # when the last keyframe with a zoom step arrived
        self._step_interval: float | None = None  # their mean spacing, seconds
        self._source = "seed"
        self._scene_label: str | None = None

        self._label: str | None = None
        self._confidence = 0.0
        self._top: tuple[tuple[str, float], ...] = ()
        self._status = ""
        self._painter = HudPainter(width, height, label_style)
        self._hud_key: tuple | None = None
        self._hud_texture: moderngl.Texture | None = None
        self._hud_blank = True

    @property
    def palette(self) -> Palette:
        """Set a name from PALETTES, a Palette, or one RGB multiplier for the whole picture."""
        return self._palette

    @palette.setter
    def palette(self, value: str | Palette | tuple[float, float, float]) -> None:
        if isinstance(value, str):
            self._palette = PALETTES[value]
        elif isinstance(value, Palette):
            self._palette = value
        else:
            rgb = tuple(float(c) for c in value)
            self._palette = Palette(rgb, rgb, 1.0)

    @property
    def label_style(self) -> str:
        return self._painter.style

    @label_style.setter
    def label_style(self, style: str) -> None:
        self._painter = HudPainter(self.width, self.height, style)

    @property
    def hud_rect(self) -> tuple[int, int, int, int]:
        """Where the HUD panel goes: x, y, width, height in pixels, top-left origin."""
        return (*self._painter.pos, *self._painter.size)

    def show_frame(self, rgb: np.ndarray, source: str, zoom_step: float | None = None) -> None:
        """Queue a keyframe (H x W x 3 uint8, top row first); the next `draw` fades to it. `zoom_step`: how much
        further in (log-zoom) this keyframe is than the one before, as a live dream says; the renderer then zooms
        at the dream's own speed, so each keyframe arrives at the scale the screen has reached and the fade between
        them shows one picture, not two of different sizes (a smear). Without it the picture zooms at zoom_rate."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {rgb.dtype} {rgb.shape}")
        self._pending = (self._screen_sized(rgb), source, zoom_step)

    def _screen_sized(self, rgb: np.ndarray) -> np.ndarray:
        """Whole, crisp and screen-sized (a new array: the caller may reuse its buffer), in OpenGL's bottom-up rows."""
        return np.ascontiguousarray(to_screen(rgb, self.width, self.height, self.sharpen)[::-1])

    def set_label(self, label: str | None, confidence: float, top: Sequence[tuple[str, float]] = (),
                  status: str = "") -> None:
        self._label, self._confidence, self._top, self._status = label, confidence, tuple(top), status

    def draw(self, now: float) -> None:
        """Draw the picture at time `now` (seconds, any monotonic clock) into the bound framebuffer."""
        target = self.ctx.fbo
        if target is None:
            raise RuntimeError("no framebuffer is bound: use a window, or bind an offscreen one "
                               "(open_display(headless=True) does)")
        if self._start is None:
            self._start = now
        if self._pending is not None:
            (frame, source, zoom_step), self._pending = self._pending, None
            self._rate = self._zoom_rate_for(zoom_step, now)
            scene_change = source != self._source or self._label != self._scene_label
            self._source, self._scene_label = source, self._label
            self._begin_fade(frame, now, self.scene_fade_s if scene_change else self.keyframe_fade_s)
            target.use()

        self.ctx.disable(moderngl.BLEND)
        self._compose(now, graded=True)
        if self.hud_visible:
            self._draw_hud()

    def _texture(self, size: tuple[int, int], components: int, data: bytes | None = None) -> moderngl.Texture:
        texture = self.ctx.texture(size, components, data, alignment=1)
        texture.repeat_x = texture.repeat_y = False  # zoomed-in sampling stays inside the image
        return texture

    def _upload(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self._keyframe is None or self._keyframe.size != (w, h):
            if self._keyframe is not None:
                self._keyframe.release()
            self._keyframe = self._texture((w, h), 3, frame.tobytes())
        else:
            self._keyframe.write(frame.tobytes())

    def _zoom_rate_for(self, zoom_step: float | None, now: float) -> float:
        """The dream's log-zoom per second: its step per keyframe over the keyframes' mean spacing."""
        if zoom_step is None:
            self._last_step_at = None
            return self.zoom_rate
        if self._last_step_at is not None:
            spacing = min(max(now - self._last_step_at, MIN_SPACING_S), MAX_SPACING_S)
            self._step_interval = spacing if self._step_interval is None else (
                SPACING_MEMORY * self._step_interval + (1 - SPACING_MEMORY) * spacing)
        self._last_step_at = now
        return zoom_step / self._step_interval if self._step_interval else self.zoom_rate

    def _begin_fade(self, frame: np.ndarray, now: float, fade_s: float) -> None:
        # The snapshot is the picture as it is at `now`, mid-fade or not, so the fade starts there.
        spare = self._snapshots[1]
        spare.use()
        self._compose(now, graded=False)
        self._snapshots.reverse()
        self._upload(frame)
        self._start, self._fade_s = now, fade_s

    def _compose(self, now: float, graded: bool) -> None:
        age = max(0.0, now - self._start)
        fade = 1.0 if self._fade_s <= 0 else min(age / self._fade_s, 1.0)
        program = self._dream.program
        program["zoom"] = math.exp(self._rate * ZOOM_EASE_S * (1.0 - math.exp(-age / ZOOM_EASE_S)))
        program["fade"] = fade * fade * (3.0 - 2.0 * fade)  # smoothstep: no visible start or end
        program["graded"] = graded
        palette = self._palette
        program["shadows"] = palette.shadows
        program["highlights"] = palette.highlights
        program["tint"] = palette.amount
        program["vignette"] = self.vignette
        self._keyframe.use(0)
        self._snapshots[0].color_attachments[0].use(1)
        self._dream.render(moderngl.TRIANGLE_STRIP)

    def _draw_hud(self) -> None:
        status = self._status if self._source == "live" else " · ".join(filter(None, (self._status, self._source)))
        key = (self._painter, self._label, round(self._confidence, 2),
               tuple((name, round(p, 2)) for name, p in self._top), status)
        if key != self._hud_key:  # repaint only on change: set_label may come every frame
            self._hud_key = key
            surface = self._painter.paint(self._label, self._confidence, self._top, status)
            self._hud_blank = surface is None
            if surface is not None:
                data = pygame.image.tobytes(surface, "RGBA", True)
                if self._hud_texture is None or self._hud_texture.size != surface.get_size():
                    if self._hud_texture is not None:
                        self._hud_texture.release()
                    self._hud_texture = self._texture(surface.get_size(), 4, data)
                    self._hud_texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
                else:
                    self._hud_texture.write(data)
        if self._hud_blank:
            return
        self._hud.program["rect"] = _clip_rect(*self.hud_rect, self.width, self.height)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        self._hud_texture.use(0)
        self._hud.render(moderngl.TRIANGLE_STRIP)
        self.ctx.disable(moderngl.BLEND)
