"""Pixel tests of the renderer's shaders, drawn offscreen through EGL (llvmpipe is enough)."""
from __future__ import annotations

import numpy as np
import pytest

from visualizer import FallbackPlayer, Renderer, open_display
from visualizer.window import read_rgb
from app.config import Settings

W, H = 320, 180
RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


@pytest.fixture(scope="module")
def display():
    try:
        display = open_display(W, H, headless=True)
    except RuntimeError as error:
        pytest.skip(f"no EGL for offscreen OpenGL: {error}")
    yield display
    display.close()


@pytest.fixture
def renderer(display):
    return Renderer(display.ctx, W, H, vignette=0.0, zoom_rate=Settings.zoom_rate)


def solid(color, size=(64, 64)) -> np.ndarray:
    return np.broadcast_to(np.array(color, dtype=np.uint8), (*size, 3)).copy()


def centred_square(size=224, half=28) -> np.ndarray:
    frame = solid((30, 30, 30), (size, size))
    frame[size // 2 - half:size // 2 + half, size // 2 - half:size // 2 + half] = 255
    return frame


def screen(renderer: Renderer) -> np.ndarray:
    """What the renderer drew into the display's framebuffer (bound by open_display), as Display.read_pixels
    reads it."""
    return read_rgb(renderer.ctx.fbo)


def settled(renderer: Renderer, frame: np.ndarray, t: float = 0.0, source: str = "live") -> np.ndarray:
    """Show `frame` at `t` and return the picture once its (scene-change) fade has finished."""
    renderer.show_frame(frame, source)
    renderer.draw(t)
    renderer.draw(t + renderer.scene_fade_s + 0.01)
    return screen(renderer)


def centre(image: np.ndarray) -> np.ndarray:
    return image[H // 2 - 5:H // 2 + 5, W // 2 - 5:W // 2 + 5].reshape(-1, 3).mean(axis=0)


def test_red_keyframe_shows_red_in_the_centre(renderer):
    image = settled(renderer, solid(RED))
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(centre(image), RED, atol=2)


def test_frames_of_any_size_and_aspect_fill_the_screen(renderer):
    image = settled(renderer, solid(BLUE, (37, 101)))  # odd width: rows are not 4-byte aligned
    np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), BLUE, atol=2)


def test_vignette_darkens_corners_relative_to_centre(renderer):
    flat = settled(renderer, solid(GREY))
    renderer.vignette = 0.6
    renderer.draw(10.0)
    vignetted = screen(renderer)
    assert abs(int(flat[2, 2, 0]) - int(flat[H // 2, W // 2, 0])) <= 1
    corners = [vignetted[2, 2], vignetted[2, -3], vignetted[-3, 2], vignetted[-3, -3]]
    assert all(c.mean() < 0.6 * centre(vignetted).mean() for c in corners)
    np.testing.assert_allclose(centre(vignetted), GREY, atol=2)  # the middle is left alone


def test_crossfade_midpoint_is_a_mix(renderer):
    settled(renderer, solid(RED))
    renderer.show_frame(solid(BLUE), "live")  # same label and source: the short keyframe fade
    renderer.draw(10.0)
    np.testing.assert_allclose(centre(screen(renderer)), RED, atol=2)
    renderer.draw(10.0 + renderer.keyframe_fade_s / 2)
    np.testing.assert_allclose(centre(screen(renderer)), (127.5, 0, 127.5), atol=4)
    renderer.draw(10.0 + renderer.keyframe_fade_s)
    np.testing.assert_allclose(centre(screen(renderer)), BLUE, atol=2)


def test_a_new_keyframe_starts_from_the_picture_on_screen(renderer):
    before = settled(renderer, centred_square())
    renderer.show_frame(solid(BLUE), "live")
    renderer.draw(renderer.scene_fade_s + 0.01)  # same instant as `before`
    assert np.abs(screen(renderer).astype(int) - before).max() <= 2


def test_class_change_fades_slower_than_a_keyframe(renderer):
    settled(renderer, solid(RED))
    renderer.set_label("dog", 0.9)
    renderer.hud_visible = False
    renderer.show_frame(solid(BLUE), "live")
    renderer.draw(10.0)
    renderer.draw(10.0 + renderer.keyframe_fade_s)
    red, _, blue = centre(screen(renderer))
    assert red > 60 and blue > 60  # still mid-fade where a keyframe would have finished


def test_zoom_keeps_changing_the_picture_between_keyframes(renderer):
    def square_width(image):
        return int((image[H // 2, :, 0] > 140).sum())

    early = settled(renderer, centred_square())
    renderer.draw(6.0)
    later = screen(renderer)
    assert square_width(later) > square_width(early) * 1.1
    np.testing.assert_allclose(centre(later), centre(early), atol=2)  # zooms about the centre


def test_hud_on_and_off_differ_only_in_the_label_area(renderer):
    renderer.set_label("dog", 0.8, [("dog", 0.8), ("cat", 0.15)], status="listening")
    shown = settled(renderer, solid(GREY)).astype(int)
    renderer.hud_visible = False
    renderer.draw(10.0)
    hidden = screen(renderer).astype(int)
    x, y, w, h = renderer.hud_rect
    inside = np.zeros((H, W), bool)
    inside[y:y + h, x:x + w] = True
    difference = np.abs(shown - hidden).max(axis=2)
    assert difference[inside].mean() > 10
    assert difference[~inside].max() == 0


def test_big_label_style_writes_the_name_large(renderer):
    renderer.label_style = "big"
    renderer.set_label("dog", 0.9)
    shown = settled(renderer, solid(GREY)).astype(int)
    renderer.hud_visible = False
    renderer.draw(10.0)
    changed = np.abs(shown - screen(renderer)).max(axis=2) > 60
    rows, columns = np.nonzero(changed)
    assert rows.max() - rows.min() > H * 0.15  # large letters
    assert abs((columns.min() + columns.max()) / 2 - W / 2) < W * 0.05  # centred


def test_palette_tints_the_picture(renderer):
    neutral = centre(settled(renderer, solid(GREY)))
    renderer.palette = "warm"
    renderer.draw(10.0)
    warm = centre(screen(renderer))
    assert abs(neutral[0] - neutral[2]) <= 1
    assert warm[0] > warm[2] + 20
    renderer.palette = (1.0, 0.5, 0.5)  # a venue's plain RGB tint
    renderer.draw(10.0)
    np.testing.assert_allclose(centre(screen(renderer)), (128, 64, 64), atol=2)


def test_never_black_without_any_frames_prerendered_or_seeds(display, tmp_path):
    empty = tmp_path / "out"
    empty.mkdir()
    renderer = Renderer(display.ctx, W, H, zoom_rate=Settings.zoom_rate)  # default vignette on: corners count too
    player = FallbackPlayer(empty, tmp_path / "no_seeds")

    renderer.draw(0.0)  # before anything was shown
    images = [screen(renderer)]
    for label in (None, "dog"):
        frame, source = player.frame(label, 1.0)
        images.append(settled(renderer, frame, 1.0, source))
    for image in images:
        assert image.mean() > 60
        assert (image.max(axis=2) < 16).mean() < 0.001


def test_show_frame_rejects_what_it_cannot_display(renderer):
    with pytest.raises(ValueError, match="uint8"):
        renderer.show_frame(np.zeros((8, 8, 3), np.float32), "live")
    with pytest.raises(ValueError, match="H x W x 3"):
        renderer.show_frame(np.zeros((8, 8), np.uint8), "live")
    with pytest.raises(ValueError, match="source"):
        renderer.show_frame(solid(RED), "dream")


def test_a_picture_of_another_shape_is_shown_whole_never_cropped(renderer):
    """A square seed on a 16:9 screen: its top and bottom rows stay on screen (cropping to cover would lose them,
    and with them a dog's head); the bands beside it are a blurred fill of its own colours, not black."""
    square = solid(GREY, (90, 90))
    square[:10], square[-10:] = RED, BLUE  # the picture's top and bottom edges
    image = settled(renderer, square, source="seed")
    column = image[:, W // 2].astype(int)
    assert np.abs(column[1] - RED).max() < 40, column[:4]
    assert np.abs(column[-2] - BLUE).max() < 40, column[-4:]
    side = image[H // 2, :20].astype(int)  # left band: the fill, never black
    assert side.mean() > 40


def test_enlarged_keyframes_keep_their_edges_sharper_than_bilinear(display):
    """The renderer's own upscaling: a hard edge in a small keyframe rises over fewer screen pixels with sharpening
    than without (without it: the bicubic alone), and it adds nothing where the picture is flat."""
    edge = solid((40, 40, 40), (36, 64))
    edge[:, 32:] = 220
    widths = {}
    for amount in (0.0, 0.6):
        renderer = Renderer(display.ctx, W, H, vignette=0.0, sharpen=amount, zoom_rate=0.0)
        row = settled(renderer, edge).astype(float)[H // 2, :, 0]
        widths[amount] = int(((row > 60) & (row < 200)).sum())  # pixels caught mid-ramp
        assert abs(row[40] - 40) <= 2 and abs(row[-40] - 220) <= 2  # flat parts untouched
    assert widths[0.6] < widths[0.0]


def test_live_keyframes_zoom_at_the_dreams_own_speed(display):
    """Each live keyframe says how much further in it is than the last (log-zoom); the renderer zooms at that step
    per keyframe spacing, so the next keyframe arrives at the scale the screen has reached (no smear of two
    sizes). Without steps it keeps its own zoom_rate (0 here: no zoom at all)."""
    widths = {}
    for step in (None, 0.2):
        renderer = Renderer(display.ctx, W, H, vignette=0.0, zoom_rate=0.0, hud_visible=False)
        for t in (0.0, 0.5):
            renderer.show_frame(centred_square(), "live", zoom_step=step)
            renderer.draw(t)
        renderer.draw(0.95)  # 0.45 s after the second keyframe: its 0.4 s fade is over
        row = screen(renderer)[H // 2, :, 0]
        widths[step] = int((row > 128).sum())
    # 0.2 per 0.5 s is 0.4 per second: after 0.45 s the square is exp(0.18) = 1.2x as wide
    assert 1.12 < widths[0.2] / widths[None] < 1.3, widths
