"""Shows the dream: pygame + moderngl only (never torch), so the display runs beside any model."""
import os

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # before the first pygame import

from .fallback import FallbackPlayer, Picture, default_frame  # noqa: E402
from .renderer import PALETTES, Palette, Renderer  # noqa: E402
from .window import Display, open_display, save_contact_sheet  # noqa: E402

__all__ = ["Display", "FallbackPlayer", "PALETTES", "Palette", "Picture", "Renderer", "default_frame",
           "open_display", "save_contact_sheet"]
