"""Where the renderer draws: a pygame OpenGL window, or an offscreen framebuffer with no display.

Both offer the same `ctx`, `fbo`, `size`, `events()`, `read_pixels()`, `swap()`, `close()`, so the
app's loop is the same with a screen and without one (headless runs save what a window would show).
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import moderngl
import numpy as np
import pygame
from PIL import Image


def read_rgb(framebuffer: moderngl.Framebuffer) -> np.ndarray:
    """A framebuffer's pixels as H x W x 3 uint8, top row first (OpenGL stores the bottom row first)."""
    _, _, w, h = framebuffer.viewport
    data = framebuffer.read(viewport=(0, 0, w, h), components=3, alignment=1)
    return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)[::-1].copy()


class Display(ABC):
    """The window or offscreen target; `fbo` is bound after opening, so `Renderer.draw` draws into it."""

    ctx: moderngl.Context
    fbo: moderngl.Framebuffer
    headless: bool

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.fbo.viewport[2:])

    def events(self) -> list[pygame.event.Event]:
        return []

    def read_pixels(self) -> np.ndarray:
        """What has been drawn since the last swap (after a window's swap the back buffer is undefined)."""
        return read_rgb(self.fbo)

    @staticmethod
    def save_png(pixels: np.ndarray, path: str | Path) -> None:
        # zlib level 1: a 1280x720 dream in 60 ms instead of 360 ms, for 18 % more bytes
        Image.fromarray(pixels).save(path, compress_level=1)

    @abstractmethod
    def swap(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WindowDisplay(Display):
    headless = False

    def __init__(self, width: int, height: int, *, fullscreen: bool = False, vsync: bool = True,
                 hide_cursor: bool = False, title: str = "Hear and See"):
        pygame.display.init()  # not pygame.init(): the mixer would grab the sound card the app listens with
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_MAJOR_VERSION, 3)
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_MINOR_VERSION, 3)
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_PROFILE_MASK, pygame.GL_CONTEXT_PROFILE_CORE)
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_FLAGS, pygame.GL_CONTEXT_FORWARD_COMPATIBLE_FLAG)
        flags = pygame.OPENGL | pygame.DOUBLEBUF | (pygame.FULLSCREEN if fullscreen else 0)
        pygame.display.set_caption(title)
        try:
            pygame.display.set_mode((width, height), flags, vsync=int(vsync))
        except pygame.error:  # some drivers refuse vsync outright instead of ignoring it
            pygame.display.set_mode((width, height), flags)
        pygame.mouse.set_visible(not hide_cursor)
        self.ctx = moderngl.create_context(require=330)
        self.fbo = self.ctx.screen
        self.fbo.use()

    def events(self) -> list[pygame.event.Event]:
        return pygame.event.get()

    def swap(self) -> None:
        pygame.display.flip()

    def close(self) -> None:
        pygame.display.quit()


class HeadlessDisplay(Display):
    headless = True

    def __init__(self, width: int, height: int):
        try:
            self.ctx = moderngl.create_context(standalone=True, backend="egl", require=330)
        except Exception as error:  # glcontext raises plain Exception types
            raise RuntimeError("headless rendering needs EGL (Debian: libegl1 libegl-mesa0 "
                               f"libgl1-mesa-dri): {error}") from error
        self.fbo = self.ctx.framebuffer([self.ctx.renderbuffer((width, height), 4)])
        self.fbo.use()

    def swap(self) -> None:
        # A window's swap waits for the frame; without one, finish() keeps frame times honest.
        self.ctx.finish()

    def close(self) -> None:
        self.ctx.release()


def open_display(width: int, height: int, fullscreen: bool = False, headless: bool | None = None, *,
                 vsync: bool = True, hide_cursor: bool = False, title: str = "Hear and See") -> Display:
    """A window, or offscreen when `headless` (by default: when there is no X11 or Wayland display).

    Create the renderer with `display.size`: a fullscreen window may not get the size asked for.
    """
    if headless is None:
        headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless:
        return HeadlessDisplay(width, height)
    return WindowDisplay(width, height, fullscreen=fullscreen, vsync=vsync, hide_cursor=hide_cursor, title=title)


def save_contact_sheet(frames: Sequence[np.ndarray], path: str | Path, columns: int = 4,
                       cell_width: int = 320, gap: int = 4) -> Path:
    """Tile frames (H x W x 3 uint8) left to right, top to bottom, into one image file.

    Every cell takes the first frame's aspect ratio at `cell_width` pixels wide.
    """
    if not frames:
        raise ValueError("no frames for a contact sheet")
    h, w = frames[0].shape[:2]
    cell = (cell_width, max(1, round(cell_width * h / w)))
    rows = -(-len(frames) // columns)
    sheet = Image.new("RGB", (columns * cell[0] + (columns + 1) * gap, rows * cell[1] + (rows + 1) * gap),
                      (24, 24, 24))
    for i, frame in enumerate(frames):
        row, column = divmod(i, columns)
        thumbnail = Image.fromarray(frame).resize(cell, Image.Resampling.LANCZOS)
        sheet.paste(thumbnail, (gap + column * (cell[0] + gap), gap + row * (cell[1] + gap)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
