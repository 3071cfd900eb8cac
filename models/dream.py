"""The dream engine: climb a layer of an ImageNet CNN from the heard class's seed image, zooming in, frame by frame.

Each keyframe zooms into the last one, pulls it a little back toward the seed (so the subject never
dissolves), and then runs a few steps of gradient ascent over an image pyramid (octaves, coarse to fine,
the detail found at one scale carried to the next). Everything stays in torch on the model's device;
the only host copy is the finished uint8 frame.

    engine = DreamEngine(create_backbone("efficientnet_lite0"), layer="blocks.4", size=224)
    engine.set_seed("cat", load_seed_image("seed_images/cat/chelsea.jpg"))
    frame = engine.next_keyframe(intensity=0.9, zoom_speed=0.5)   # (224, 224, 3) uint8
"""
from __future__ import annotations

import argparse
import copy
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import DEFAULT_DREAM_LAYER, ImageNetBackbone, create_backbone, default_device

# Defaults, chosen on a 2-core CPU with efficientnet_lite0 at 224 px (see BENCHMARKS.md, "Dream engine").
# The zoom recursion means every keyframe starts from the last one's dream, so a few steps per keyframe
# accumulate into a deep dream over a second or two; the classic 10 steps x 4 octaves per image is not needed.
SIZE = 224  # side of the square dream, pixels
OBJECTIVE = "guided"  # "guided" (the paper's), "l2" (plain DeepDream) or "channel"
OCTAVES = 4  # pyramid levels per keyframe (224, 149, 100, 66 px); 1 = single scale
OCTAVE_SCALE = 1.5  # each coarser level is this much smaller; coarse levels are cheap and give large shapes
ITERATIONS = 2  # gradient steps per octave per keyframe at intensity 1
STEP_SIZE = 0.007  # per step, in [0, 1] image units, after normalising the gradient to mean |g| = 1
JITTER = 16  # max random shift (pixels at 224; scaled with the octave) so the dream cannot lock onto the grid
ZOOM = 0.06  # fraction of the frame cropped away per keyframe at zoom_speed 1
BLEND = 0.2  # fraction pulled back toward the seed every keyframe; with STEP_SIZE it sets how far the dream
# strays: about ITERATIONS * OCTAVES * STEP_SIZE / BLEND. Weaker blend or stronger steps and the network soon
# stops seeing the seed's class (BENCHMARKS.md has the top-5 check), though to people the subject stays longer.
CROSSFADE = 8  # keyframes to fade from the old dream to a new seed
GUIDE_CACHE = 64  # seeds whose guide features are kept (the installation has at most 50 classes)


class SeedImageError(ValueError):
    """A seed image that is missing or cannot be decoded; the message names the file."""


class _StopForward(Exception):
    """Raised by the capture hook: the layers after the dream layer would only cost time."""


def load_seed_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); transparency is laid on white, as clip art expects."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise SeedImageError(f"{path}: seed image not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises many types for a broken file; the caller needs one
        raise SeedImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 8:
        raise SeedImageError(f"{path}: image too small ({rgb.shape[1]}x{rgb.shape[0]})")
    return rgb


def is_degenerate(frame: np.ndarray) -> bool:
    """True for a frame nobody should see: (nearly) black, blown out to white, or flat."""
    f = frame.astype(np.float32)
    return bool(f.mean() < 10 or f.mean() > 245 or f.std() < 3)


class DreamEngine:
    def __init__(self, backbone: ImageNetBackbone, layer: str | None = None, size: int = SIZE,
                 device: str | torch.device | None = None, objective: str = OBJECTIVE, channel: int = 0,
                 octaves: int = OCTAVES, octave_scale: float = OCTAVE_SCALE, iterations: int = ITERATIONS,
                 step_size: float = STEP_SIZE, jitter: int = JITTER, zoom: float = ZOOM, blend: float = BLEND,
                 crossfade: int = CROSSFADE, seed: int = 0):
        if objective not in ("guided", "l2", "channel"):
            raise ValueError(f"objective must be 'guided', 'l2' or 'channel', not {objective!r}")
        self.device = torch.device(device) if device is not None else default_device()
        self.layer = layer or DEFAULT_DREAM_LAYER[backbone.name]
        backbone.layer(self.layer)  # raises BackboneError naming the valid layers
        self.net = _dream_copy(backbone, self.device)
        self.channels_last = self.device.type in ("cpu", "cuda")  # the faster conv layout there; MPS prefers NCHW
        self.size, self.objective, self.channel = size, objective, channel
        self.octaves, self.octave_scale, self.iterations = max(1, octaves), octave_scale, iterations
        self.step_size, self.jitter, self.zoom, self.blend = step_size, jitter, zoom, blend
        self.crossfade = max(1, crossfade)
        self.rng = torch.Generator().manual_seed(seed)  # jitter offsets: small ints, drawn on the host
        self.current_seed: str | None = None
        self.seed: torch.Tensor | None = None  # (1, 3, size, size) in [0, 1]
        self.image: torch.Tensor | None = None  # the dream so far, same shape
        self.guide: torch.Tensor | None = None  # (C, positions) seed features at the dream layer
        self._guides: dict[str, tuple[np.ndarray, torch.Tensor, torch.Tensor]] = {}  # name -> (rgb, seed, features)
        self._fade_left = 0

    # ---- the API the inference server codes against -------------------------------------------------

    def set_seed(self, name: str, rgb: np.ndarray) -> None:
        """Dream on `rgb` (uint8 HxWx3) from now on; a new name crossfades over the next keyframes."""
        seed, guide = self._seed_and_guide(name, rgb)
        if self.image is None:
            self.image, self._fade_left = seed.clone(), 0
        elif name != self.current_seed:
            self._fade_left = self.crossfade
        self.current_seed, self.seed, self.guide = name, seed, guide

    @torch.no_grad()
    def next_keyframe(self, intensity: float = 1.0, zoom_speed: float = 0.5) -> np.ndarray:
        """One zoom-and-dream step. `intensity` in [0, 1] (classification confidence) scales the number and
        size of the gradient steps; `zoom_speed` in [0, 1] (loudness) scales the zoom. Returns (size, size, 3) uint8."""
        if self.seed is None:
            raise RuntimeError("set_seed() before next_keyframe()")
        intensity = min(max(float(intensity), 0.0), 1.0)
        zoom_speed = min(max(float(zoom_speed), 0.0), 1.0)
        x = _zoom(self.image, self.zoom * zoom_speed)
        rate = self.blend
        if self._fade_left > 0:  # rate 1/n with n counting down fades the old image out linearly over n keyframes
            rate = max(rate, 1.0 / self._fade_left)
            self._fade_left -= 1
        x = torch.lerp(x, self.seed, rate)
        x = self.dream(x, math.ceil(self.iterations * intensity), self.step_size * intensity)
        self.image = x
        return to_uint8(x)

    # ---- the rest is also used by prerender, the benchmark and the tests -----------------------------

    def reset(self) -> None:
        """Forget the dream (not the cached guide features): the next set_seed starts cleanly from its seed."""
        self.image, self.seed, self.guide, self.current_seed, self._fade_left = None, None, None, None, 0

    def set_image(self, rgb: np.ndarray) -> None:
        """Continue the dream from `rgb` (uint8 HxWx3), e.g. the last frame of a sequence on disk."""
        self.image = _to_tensor(rgb, self.size, self.device)

    def dream(self, x: torch.Tensor, iterations: int, step_size: float) -> torch.Tensor:
        """Gradient ascent on (1, 3, H, W) `x` in [0, 1] over an image pyramid, coarse to fine."""
        if iterations <= 0 or step_size <= 0:
            return x
        h, w = x.shape[-2:]
        shapes = [(round(h / self.octave_scale ** k), round(w / self.octave_scale ** k)) for k in range(self.octaves)]
        detail = torch.zeros_like(x)
        with self._capture() as acts:
            for shape in reversed(shapes):
                # each level starts from the image at its scale plus the detail dreamt at the coarser one
                base = x if shape == (h, w) else F.interpolate(x, size=shape, mode="bilinear", antialias=True,
                                                                align_corners=False)
                img = base + _resize(detail, shape)
                for _ in range(iterations):
                    img = self._step(img, acts, step_size)
                detail = img - base
        return (x + detail).clamp(0.0, 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the dream layer for (1, 3, H, W) `x`, as (C, H'*W')."""
        with torch.no_grad(), self._capture() as acts:
            return self._forward(x, acts)[0].flatten(1)

    def hook_count(self) -> int:
        """Forward hooks alive on the dream network; 0 between calls (the kiosk runs for weeks)."""
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in self.net.modules())

    # ---- internals ---------------------------------------------------------------------------------

    def _step(self, img: torch.Tensor, acts: dict, step_size: float) -> torch.Tensor:
        jitter = max(1, round(self.jitter * img.shape[-1] / 224))
        oy, ox = torch.randint(-jitter, jitter + 1, (2,), generator=self.rng).tolist()
        with torch.enable_grad():
            rolled = torch.roll(img, (oy, ox), (2, 3)).requires_grad_(True)
            loss = self._objective(self._forward(rolled, acts))
            (grad,) = torch.autograd.grad(loss, rolled)
        grad = torch.roll(grad, (-oy, -ox), (2, 3))
        # normalised steps: the gradient's scale differs by layer, objective and image; its direction does not
        return (img + grad * (step_size / (grad.abs().mean() + 1e-8))).clamp(0.0, 1.0)

    def _objective(self, act: torch.Tensor) -> torch.Tensor:
        if self.objective == "l2":
            return act.pow(2).sum() / 2  # gradient = the activations themselves: amplify whatever is there
        if self.objective == "channel":
            return act[:, self.channel].sum()
        # guided (the paper's): each position pulls toward the seed feature it already resembles most
        x = act[0].flatten(1)  # (C, N)
        with torch.no_grad():
            match = (x.T @ self.guide).argmax(1)  # (N,) index into the seed's positions
        return (x * self.guide[:, match]).sum()

    def _forward(self, x: torch.Tensor, acts: dict) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            self.net(x)
        except _StopForward:
            pass
        return acts.pop("out")

    @contextmanager
    def _capture(self):
        """Hook the dream layer for the length of one call, and always take the hook off again."""
        acts = {}

        def hook(module, inputs, output):
            acts["out"] = output
            raise _StopForward

        handle = self.net.layer(self.layer).register_forward_hook(hook)
        try:
            yield acts
        finally:
            handle.remove()

    def _seed_and_guide(self, name: str, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._guides.get(name)
        if cached is not None and cached[0].shape == rgb.shape and np.array_equal(cached[0], rgb):
            self._guides[name] = self._guides.pop(name)  # most recently used goes last
            return cached[1], cached[2]
        seed = _to_tensor(rgb, self.size, self.device)
        guide = self.features(seed)  # computed once per seed: every keyframe of the class matches against it
        self._guides[name] = (np.array(rgb, copy=True), seed, guide)
        while len(self._guides) > GUIDE_CACHE:
            self._guides.pop(next(iter(self._guides)))
        return seed, guide


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8, the one host copy per keyframe."""
    return (x[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


def _to_tensor(rgb: np.ndarray, size: int, device) -> torch.Tensor:
    """uint8 HxWx3 (or HxW grey, or HxWx4) -> (1, 3, size, size) in [0, 1]: scaled to cover, centre crop."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise ValueError(f"seed must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    x = torch.from_numpy(np.array(rgb[..., :3]))  # a copy: the caller's array may be read-only
    x = x.to(device).permute(2, 0, 1)[None].float() / 255
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size].clamp(0, 1).contiguous()


def _resize(x: torch.Tensor, shape) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(shape) else F.interpolate(x, size=shape, mode="bilinear",
                                                                         align_corners=False)


def _zoom(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Crop the centre (1 - amount) of the frame and scale it back up: one step of the endless zoom."""
    if amount <= 0:
        return x
    s = 1.0 - amount
    theta = torch.tensor([[[s, 0.0, 0.0], [0.0, s, 0.0]]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _dream_copy(backbone: ImageNetBackbone, device) -> ImageNetBackbone:
    """A private inference copy of the backbone, made fast for input gradients:
    weights frozen (only d loss / d image is needed; weight gradients would double the backward pass),
    every BatchNorm folded into the conv before it (in eval it is a fixed affine map, so one op fewer each way),
    channels-last memory (the faster convolution path on CPU and CUDA). Outputs match the original to ~1e-5."""
    net = copy.deepcopy(backbone).eval().requires_grad_(False)
    folded = _fold_batchnorm(copy.deepcopy(net))
    probe = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = net(probe), folded(probe)
    if torch.allclose(ref, out, rtol=1e-3, atol=1e-3 * ref.abs().max().item()):
        net = folded  # else keep the unfolded copy: some unusual architecture broke the conv -> BN pairing
    net = net.to(device)
    if torch.device(device).type in ("cpu", "cuda"):
        net = net.to(memory_format=torch.channels_last)
    return net


def _fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold each BatchNorm2d whose input is exactly a Conv2d's output into that conv (found by tracing
    one forward pass, so it works for any backbone), then replace the BN by its activation (timm) or nothing."""
    conv_of_output, pairs = {}, []
    keep = []  # keep traced tensors alive so that id() stays unique

    def on_conv(module, inputs, output):
        keep.append(output)
        conv_of_output[id(output)] = module

    def on_bn(module, inputs):
        conv = conv_of_output.get(id(inputs[0]))
        if conv is not None:
            pairs.append((conv, module))

    handles = [m.register_forward_hook(on_conv) for m in net.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_pre_hook(on_bn) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            net(torch.rand(1, 3, 64, 64))
    finally:
        for h in handles:
            h.remove()
    folded = {id(bn) for _, bn in pairs}
    for conv, bn in pairs:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.data.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
    for name, module in list(net.named_modules()):
        if id(module) in folded:
            parent, _, attr = name.rpartition(".")
            # timm's BatchNormAct2d applies its activation after the norm; keep that part
            after = nn.Sequential(module.drop, module.act) if hasattr(module, "act") else nn.Identity()
            setattr(net.get_submodule(parent) if parent else net, attr, after)
    return net


# ---- prerendered sequences (the visualizer's fallback when no model runs) ------------------------------

PRERENDER_FRAMES = 120
PRERENDER_OUT = Path(__file__).resolve().parent.parent / "prerendered"  # where app/config.py's fallback looks


def prerender(classes: list[str], frames: int = PRERENDER_FRAMES, size: int = SIZE,
              out_dir: str | Path = PRERENDER_OUT, backbone: str = "efficientnet_lite0",
              weights_path: str | Path | None = None, intensity: float = 1.0, zoom_speed: float = 0.5,
              engine: DreamEngine | None = None, seed_dir: str | Path | None = None, progress: bool = True) -> int:
    """Write out_dir/<class>/00000.png ... for each class; returns the number of frames written.
    Resumable: existing frames are kept and the zoom continues from the last one. Each frame is dreamt from
    the saved (uint8) previous frame with jitter seeded by its index, so a resumed sequence is the same
    sequence an uninterrupted run writes."""
    from PIL import Image
    from tqdm import tqdm

    from models import seeds

    out_dir = Path(out_dir)
    if engine is None:
        engine = DreamEngine(create_backbone(backbone, pretrained=True, weights_path=weights_path), size=size)
    todo = {}
    for name in classes:
        folder = out_dir / name
        done = 0
        while done < frames and _readable_png(folder / f"{done:05d}.png"):
            done += 1
        todo[name] = done
    bar = tqdm(total=len(classes) * frames, initial=sum(todo.values()), unit="frame", disable=not progress,
               desc="prerender")
    written = 0
    for name, done in todo.items():
        if done >= frames:
            continue
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        engine.reset()
        engine.set_seed(name, load_seed_image(seeds.seed_image_path(name, seed_dir or seeds.SEED_DIR)))
        if done > 0:
            engine.set_image(load_seed_image(folder / f"{done - 1:05d}.png"))
        for i in range(done, frames):
            bar.set_postfix_str(name)
            engine.rng.manual_seed(i)
            frame = engine.next_keyframe(intensity, zoom_speed)
            tmp = folder / f".{i:05d}.png.part"
            Image.fromarray(frame).save(tmp, format="PNG")
            tmp.replace(folder / f"{i:05d}.png")  # atomic: a killed run never leaves half a frame behind
            engine.set_image(frame)
            written += 1
            bar.update(1)
    bar.close()
    return written


def _readable_png(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        load_seed_image(path)
        return True
    except SeedImageError:
        return False


def prerender_main(argv: list[str] | None = None) -> int:
    """hear-and-see prerender [--classes A,B] [--frames N] [--size PIXELS] [--out DIR]"""
    from models import seeds

    p = argparse.ArgumentParser(prog="hear-and-see prerender",
                                description="Render zoom-dream sequences per class for the visualizer's fallback.")
    p.add_argument("--classes", help="comma-separated classes (default: every class with a seed image)")
    p.add_argument("--frames", type=int, default=PRERENDER_FRAMES, help="frames per class")
    p.add_argument("--size", type=int, default=SIZE, help="frame side in pixels")
    p.add_argument("--out", default=str(PRERENDER_OUT), help="output folder")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default=None, help="local ImageNet weights file for the backbone")
    p.add_argument("--intensity", type=float, default=1.0)
    p.add_argument("--zoom-speed", type=float, default=0.5)
    args = p.parse_args(argv)
    classes = args.classes.split(",") if args.classes else seeds.seed_classes()
    missing = [c for c in classes if not seeds.seed_image_paths(c)]
    if missing:
        p.error(f"no seed image for {', '.join(missing)} in {seeds.SEED_DIR}; "
                f"add one, or generate one with `python -m models.seeds generate CLASS`")
    n = prerender(classes, args.frames, args.size, args.out, args.backbone, args.weights, args.intensity,
                  args.zoom_speed)
    print(f"wrote {n} frames under {args.out}")
    return 0
