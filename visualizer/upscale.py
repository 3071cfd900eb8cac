"""A keyframe made screen-sized once, when it arrives: fitted whole, the bands beside it filled, enlarged crisply.

Done on the CPU with Pillow (about 20 ms a keyframe at 1280x720 on a loaded 2-core box) rather than in the shader:
llvmpipe pays for every texture tap on every drawn pixel of every frame, and five taps per pixel there cost more
than a keyframe's whole preparation (BENCHMARKS.md, "Dreams that travel").
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

FILL_SHRINK = 16  # the fill beside a picture of another shape: the picture shrunk this much, blurred, enlarged
FILL_BLUR = 2.0  # ... blurred by this radius in shrunk pixels, so no shape of the picture shows through blocky
SHARPEN_RADIUS = 1.0  # unsharp radius in keyframe pixels: the scale an enlargement softens


def to_screen(rgb: np.ndarray, width: int, height: int, sharpen: float) -> np.ndarray:
    """`rgb` (H x W x 3 uint8) as a width x height picture: the whole of it, never cropped or stretched, its edges
    steepened by `sharpen` (unsharp amount at its own pixel scale, 0: none) before a bicubic enlargement; where its
    shape differs from the screen's, the rest is a blurred enlargement of it. No noise is added."""
    image = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    if sharpen > 0 and (w < width or h < height):
        image = image.filter(ImageFilter.UnsharpMask(SHARPEN_RADIUS, round(100 * sharpen), 0))
    fit = min(width / w, height / h)
    inner = (min(width, round(w * fit)), min(height, round(h * fit)))
    resample = Image.Resampling.BICUBIC if fit > 1 else Image.Resampling.LANCZOS
    if inner == (width, height):
        return np.asarray(image.resize(inner, resample))
    cover = max(width / w, height / h)
    small = (max(1, round(w * cover / FILL_SHRINK)), max(1, round(h * cover / FILL_SHRINK)))
    blurred = (image.resize(small, Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(FILL_BLUR))
               .resize((round(w * cover), round(h * cover)), Image.Resampling.BICUBIC))
    left, top = (blurred.width - width) // 2, (blurred.height - height) // 2
    screen = blurred.crop((left, top, left + width, top + height))
    screen.paste(image.resize(inner, resample), ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return np.asarray(screen)
