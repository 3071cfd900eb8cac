"""The HUD panel, painted with pygame.font onto a surface the renderer uploads as a texture.

Only the panel's own rectangle is painted and blended, not the whole screen: on llvmpipe
every blended pixel costs CPU time at display rate.
"""
from __future__ import annotations

from collections.abc import Sequence

import pygame

STYLES = ("bars", "big")  # "big" is the children's mode: the animal's name, large

_WHITE = (255, 255, 255)
_DIM = (200, 200, 200)
_STATUS = (255, 190, 70)
_BAR = (110, 200, 255)
_TRACK = (255, 255, 255, 45)
_PANEL = (0, 0, 0, 150)


def _pretty(label: str) -> str:
    return label.replace("_", " ")


def _fit(text: pygame.Surface, width: int) -> pygame.Surface:
    """Shrinks a rendered line that is wider than `width` (long class names in the big style)."""
    if text.get_width() <= width:
        return text
    scale = width / text.get_width()
    return pygame.transform.smoothscale(text, (width, max(1, round(text.get_height() * scale))))


class HudPainter:
    """Lays out and paints the panel for a screen of `width` x `height` pixels.

    `pos` is the panel's top-left corner in screen pixels (top-left origin) and `size` its size;
    both are fixed per style so the renderer keeps one texture.
    """

    def __init__(self, width: int, height: int, style: str = "bars"):
        if style not in STYLES:
            raise ValueError(f"label style must be one of {STYLES}, not {style!r}")
        pygame.font.init()
        self.style = style
        s = height / 720  # layouts are designed at 720p and scale with the screen
        margin = round(24 * s)
        self._pad = round(14 * s)
        if style == "bars":
            self.size = (min(width - 2 * margin, round(480 * s)), round(250 * s))
            self._small = pygame.font.Font(None, round(30 * s))
            self._large = pygame.font.Font(None, round(64 * s))
        else:
            self.size = (width - 2 * margin, round(250 * s))
            self._small = pygame.font.Font(None, round(34 * s))
            self._large = pygame.font.Font(None, round(230 * s))
        self.pos = (margin, height - margin - self.size[1])

    def paint(self, label: str | None, confidence: float, top: Sequence[tuple[str, float]],
              status: str) -> pygame.Surface | None:
        """The panel with straight alpha, or None when there is nothing to show."""
        if label is None and not status:
            return None
        surface = pygame.Surface(self.size, pygame.SRCALPHA)
        if self.style == "bars":
            self._paint_bars(surface, label, confidence, top, status)
        else:
            self._paint_big(surface, label, status)
        return surface

    def _paint_bars(self, surface: pygame.Surface, label: str | None, confidence: float,
                    top: Sequence[tuple[str, float]], status: str) -> None:
        pad, (w, h) = self._pad, self.size
        content = pygame.Surface(self.size, pygame.SRCALPHA)
        y = pad
        if status:
            content.blit(_fit(self._small.render(status, True, _STATUS), w - 2 * pad), (pad, y))
            y += self._small.get_linesize()
        if label is not None:
            name = self._large.render(_pretty(label), True, _WHITE)
            percent = self._small.render(f"{confidence:.0%}", True, _DIM)
            content.blit(_fit(name, w - 3 * pad - percent.get_width()), (pad, y))
            content.blit(percent, (w - pad - percent.get_width(), y + name.get_height() - percent.get_height()))
            y += self._large.get_linesize()
            row = self._small.get_linesize() + pad // 2
            name_w, percent_w = round(w * 0.38), self._small.size("100%")[0]
            bar_x, bar_w = pad + name_w, w - 3 * pad - name_w - percent_w
            bar_h = self._small.get_height() * 2 // 3
            for other, p in top or [(label, confidence)]:
                if y + row > h - pad:
                    break
                p = min(max(p, 0.0), 1.0)
                content.blit(_fit(self._small.render(_pretty(other), True, _DIM), name_w - pad), (pad, y))
                bar_y = y + (self._small.get_height() - bar_h) // 2
                pygame.draw.rect(content, _TRACK, (bar_x, bar_y, bar_w, bar_h))
                pygame.draw.rect(content, _BAR, (bar_x, bar_y, round(bar_w * p), bar_h))
                text = self._small.render(f"{p:.0%}", True, _DIM)
                content.blit(text, (w - pad - text.get_width(), y))
                y += row
        # The panel shrinks to its content and sits on the bottom margin: no empty dark box.
        used = min(y + pad // 2, h)
        pygame.draw.rect(surface, _PANEL, (0, h - used, w, used), border_radius=pad)
        surface.blit(content, (0, h - used), (0, 0, w, used))

    def _paint_big(self, surface: pygame.Surface, label: str | None, status: str) -> None:
        pad, (w, h) = self._pad, self.size
        if status:
            surface.blit(_fit(self._small.render(status, True, _STATUS), w), (0, 0))
        if label is None:
            return
        text = _pretty(label).capitalize()
        # No panel behind the name: a shadow keeps it readable on any picture without boxing it in.
        shadow = _fit(self._large.render(text, True, (0, 0, 0)), w - 2 * pad)
        shadow.set_alpha(170)
        name = _fit(self._large.render(text, True, _WHITE), w - 2 * pad)
        x, y = (w - name.get_width()) // 2, h - name.get_height()
        offset = max(2, pad // 3)
        surface.blit(shadow, (x + offset, y + offset - pad // 2))
        surface.blit(name, (x, y - pad // 2))
