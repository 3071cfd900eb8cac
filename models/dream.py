"""The dream engine: climb a layer of an ImageNet CNN from the heard class's seed image, zooming in, frame by frame.

Each keyframe zooms into the last one and runs a few steps of gradient ascent over an image pyramid (octaves,
coarse to fine, the detail found at one scale carried to the next). The climb has two parts: the seed's own features
(each position pulled toward the seed feature it already resembles, the paper's guided objective) and the probability
of the ImageNet classes that stand for the heard sound. Nothing pulls the picture back to the seed, so the zoom keeps
travelling into ever new structure, and the class term keeps that structure of the heard class. The dream has the
screen's aspect ratio. Everything stays in torch on the model's device; the only host copy is the finished frame.

    engine = DreamEngine(create_backbone("efficientnet_lite0"), layer="blocks.4", size=224)   # 398 x 224
    engine.set_seed("cat", load_seed_image(seed_image_path("cat")), imagenet_classes("cat"))
    frame = engine.next_keyframe(intensity=0.9, zoom_speed=0.5)   # (224, 398, 3) uint8

A server dreaming for several screens gives their engines one network (`net=dream_network(...)`) and walks their
keyframes a gradient step at a time (`keyframe_steps`); `step_together` does the steps of dreams at the same layer
and image size in one batch.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import DEFAULT_DREAM_LAYER, ImageNetBackbone, default_device

# Defaults, chosen on a 2-core CPU with efficientnet_lite0 at 224 px (see BENCHMARKS.md, "Dream engine").
# The zoom recursion means every keyframe starts from the last one's dream, so a few steps per keyframe
# accumulate into a deep dream over a second or two; the classic 10 steps x 4 octaves per image is not needed.
SIZE = 224  # the dream's short side, pixels, on a CPU
GPU_SIZE = 720  # ... on CUDA: the screen's own lines (1280 x 720), fine detail at the size it is shown
MPS_SIZE = 448
ASPECT = 16 / 9  # width / height: the screen's, so the picture is never cropped to fit it
OBJECTIVE = "guided"  # "guided" (the paper's), "l2" (plain DeepDream) or "channel"
OCTAVES = 4  # pyramid levels per keyframe (224, 149, 100, 66 px); 1 = single scale
OCTAVE_SCALE = 1.5  # each coarser level is this much smaller; coarse levels are cheap and give large shapes
ITERATIONS = 2  # gradient steps per octave per keyframe at intensity 1
STEP_SIZE = 0.007  # per step, in [0, 1] image units, after normalising the gradient to mean |g| = 1
JITTER = 16  # max random shift (pixels at a 224 short side; scaled with the octave): the dream cannot lock to the grid
ZOOM = 0.06  # fraction of the frame cropped away per keyframe at zoom_speed 1
BLEND = 0.0  # fraction pulled back toward the seed every keyframe. Any pull back fights the zoom: the dream
# converges to one fixed picture with echo rings of the seed's edges (BENCHMARKS.md, "Dreams that travel"), so
# the subject is kept by CLASS_WEIGHT instead and the zoom keeps travelling.
CLASS_WEIGHT = 1.0  # weight of the heard class's ImageNet log-probability against the seed-guided objective: what
# keeps new structure of the heard class appearing as the zoom travels past the seed
RESEED = 0.6  # each time the zoom has magnified 1 / RESEED times, the seed appears again in the centre at this
# fraction of the frame and is carried outward by the zoom (the dream paints over it as it grows): the travel
# never runs out of the heard class's subject, and the copy moves exactly with the zoom, so it leaves no echo rings.
# 0: never.
RESEED_FADE = 0.25  # log-zoom over which a centre copy fades in (about 8 keyframes at zoom speed 0.5)
RESEED_ALPHA = 0.9  # how much of the copy shows at most: the dream around it shows through its edges and its face
SMOOTH = True  # blur each step's gradient (1-2-1): with nothing pulling back to the seed, pixel-level gradient
# noise would pile up keyframe after keyframe into grain; structure a pixel or more across is untouched
CROSSFADE = 1  # keyframes to fade from the old dream to a new seed. 1: the new class starts at its seed at once, and
# the renderer fades the screen from the old picture to it in 0.8 s (its scene fade); a fade here as well would
# bring the old class back for a keyframe after the fallback had already shown the new one
FILL_BLUR = 12  # how much the copy that fills the bands beside a fitted seed is blurred (downscale factor)
GUIDE_CACHE = 64  # seeds whose guide features are kept (the installation has at most 50 classes)


class _StopForward(Exception):
    """Raised by the capture hook: the layers after the dream layer would only cost time."""


def is_degenerate(frame: np.ndarray) -> bool:
    """True for a frame nobody should see: (nearly) black, blown out to white, or flat."""
    f = frame.astype(np.float32)
    return bool(f.mean() < 10 or f.mean() > 245 or f.std() < 3)


@dataclass
class GradientStep:
    """One gradient step a dream's keyframe waits for (see DreamEngine.keyframe_steps); `step_together` does it."""
    engine: DreamEngine
    image: torch.Tensor  # (1, 3, h, w) in [0, 1], at the octave being dreamt
    step_size: float
    stage: tuple[int, int]  # (octave level, step): how far into its keyframe the dream is

    @property
    def key(self) -> tuple:
        """Steps with equal keys can share a forward and backward pass."""
        return id(self.engine.net), self.engine.layer, tuple(self.image.shape)


class DreamEngine:
    def __init__(self, backbone: ImageNetBackbone, layer: str | None = None, size: int = SIZE,
                 device: str | torch.device | None = None, objective: str = OBJECTIVE, channel: int = 0,
                 octaves: int = OCTAVES, octave_scale: float = OCTAVE_SCALE, iterations: int = ITERATIONS,
                 step_size: float = STEP_SIZE, jitter: int = JITTER, zoom: float = ZOOM, blend: float = BLEND,
                 crossfade: int = CROSSFADE, seed: int = 0, aspect: float = ASPECT,
                 class_weight: float = CLASS_WEIGHT, smooth: bool = SMOOTH, reseed: float = RESEED,
                 net: nn.Module | None = None):
        """`net`: a dream_network(backbone, device) to share with other engines (one copy in memory, and their
        steps can be batched); None: a private one."""
        if objective not in ("guided", "l2", "channel"):
            raise ValueError(f"objective must be 'guided', 'l2' or 'channel', not {objective!r}")
        self.device = torch.device(device) if device is not None else default_device()
        self.layer = layer or DEFAULT_DREAM_LAYER[backbone.name]
        backbone.layer(self.layer)  # raises BackboneError naming the valid layers
        self.net = dream_network(backbone, self.device) if net is None else net
        self.channels_last = self.device.type in ("cpu", "cuda")  # the faster conv layout there; MPS prefers NCHW
        self.size, self.objective, self.channel = size, objective, channel
        # (height, width): `size` is the short side, whichever way the screen is turned
        self.shape = (size, max(size, round(size * aspect))) if aspect >= 1 else (max(size, round(size / aspect)), size)
        self.class_weight, self.smooth, self.reseed = class_weight, smooth, reseed
        self.octaves, self.octave_scale, self.iterations = max(1, octaves), octave_scale, iterations
        self.step_size, self.jitter, self.zoom, self.blend = step_size, jitter, zoom, blend
        self.crossfade = max(1, crossfade)
        self.rng = torch.Generator().manual_seed(seed)  # jitter offsets: small ints, drawn on the host
        self.current_seed: str | None = None
        self.seed: torch.Tensor | None = None  # (1, 3, height, width) in [0, 1]
        self.image: torch.Tensor | None = None  # the dream so far, same shape
        self.guide: torch.Tensor | None = None  # (C, positions) seed features at the dream layer
        self.classes: torch.Tensor | None = None  # ImageNet indices of the heard class; None: no class pull
        self._guides: dict[str, tuple[np.ndarray, torch.Tensor, torch.Tensor]] = {}  # name -> (rgb, seed, features)
        self._fade_left = 0
        # log of how far the zoom has magnified since this seed began; the centre re-seeding is a function of it
        # alone, so a sequence resumed from disk (prerender) continues exactly by restoring this one number
        self.travelled = 0.0
        self.last_zoom_step = 0.0

    # ---- the API the inference server codes against -------------------------------------------------

    def set_seed(self, name: str, rgb: np.ndarray, imagenet_classes=()) -> None:
        """Dream on `rgb` (uint8 HxWx3) from now on; a new name crossfades over the next keyframes.
        `imagenet_classes` (indices) are what the heard class looks like to the network: the dream climbs their
        probability too, so the zoom keeps finding the class after it has travelled past the seed."""
        seed, guide = self._seed_and_guide(name, rgb)
        if self.image is None:
            self.image, self._fade_left = seed.clone(), 0
        elif name != self.current_seed:
            self._fade_left = self.crossfade
        if name != self.current_seed:
            self.travelled = 0.0
        self.current_seed, self.seed, self.guide = name, seed, guide
        self.classes = torch.tensor(list(imagenet_classes), dtype=torch.long, device=self.device) \
            if len(imagenet_classes) else None

    def next_keyframe(self, intensity: float = 1.0, zoom_speed: float = 0.5) -> np.ndarray:
        """One zoom-and-dream step. `intensity` in [0, 1] (classification confidence) scales the number and
        size of the gradient steps, and the zoom; `zoom_speed` in [0, 1] (loudness) scales the zoom too.
        Returns (height, width, 3) uint8."""
        for frame in self.keyframe_in_parts(intensity, zoom_speed):
            pass
        return frame

    def keyframe_in_parts(self, intensity: float = 1.0, zoom_speed: float = 0.5):
        """next_keyframe one gradient step at a time, alone: yields None after each step but the last, then the
        frame."""
        parts = self.keyframe_steps(intensity, zoom_speed)
        part = next(parts)
        while isinstance(part, GradientStep):
            part = parts.send(step_together([part])[0])
            if isinstance(part, GradientStep):
                yield None
        yield part

    def keyframe_steps(self, intensity: float = 1.0, zoom_speed: float = 0.5, iterations: int | None = None):
        """next_keyframe as a coroutine: yields a GradientStep for each gradient step, to be sent back the stepped
        image (step_together's), then yields the frame. A server with one thread answers its clients between
        steps, so a window waits for one step of a dream, not a keyframe (which takes over a second on a loaded
        CPU), and it can step several clients' dreams in one batch. The keyframe is committed only when the frame
        is yielded: a coroutine dropped half-way leaves the dream as it was. `iterations`: steps per octave at most
        (a quick keyframe); None: the engine's."""
        if self.seed is None:
            raise RuntimeError("set_seed() before next_keyframe()")
        intensity = min(max(float(intensity), 0.0), 1.0)
        amount = self.zoom_amount(intensity, zoom_speed)
        with torch.no_grad():
            x = _zoom(self.image, amount)
            travelled = self.travelled - math.log1p(-amount)
            x = self._reseed(x, self.travelled, travelled)
            rate, fade_left = self.blend, self._fade_left
            if fade_left > 0:  # rate 1/n with n counting down fades the old image out linearly over n keyframes
                rate = max(rate, 1.0 / fade_left)
                fade_left -= 1
            if rate > 0:
                x = torch.lerp(x, self.seed, rate)
        steps = math.ceil(self.iterations * intensity)
        x = yield from self.dream_steps(x, steps if iterations is None else min(steps, iterations),
                                        self.step_size * intensity)
        self.image, self.travelled, self._fade_left = x, travelled, fade_left
        self.last_zoom_step = -math.log1p(-amount)  # how much further in this keyframe is than the last one
        yield to_uint8(x)

    def zoom_amount(self, intensity: float, zoom_speed: float) -> float:
        """How much one keyframe magnifies. The zoom goes as fast as the dream can paint: magnifying without new
        detail is only blur, so a weak dream (low confidence, the toy's gentle intensity) travels slower instead of
        smearing the picture."""
        return self.zoom * min(max(float(zoom_speed), 0.0), 1.0) * min(max(float(intensity), 0.0), 1.0)

    # ---- the rest is also used by prerender, the benchmark and the tests -----------------------------

    def reset(self) -> None:
        """Forget the dream (not the cached guide features): the next set_seed starts cleanly from its seed."""
        self.image, self.seed, self.guide, self.current_seed, self._fade_left = None, None, None, None, 0
        self.classes, self.travelled = None, 0.0

    def set_image(self, rgb: np.ndarray) -> None:
        """Continue the dream from `rgb` (uint8 HxWx3), e.g. the last frame of a sequence on disk."""
        self.image = _to_tensor(rgb, self.shape, self.device)

    def dream(self, x: torch.Tensor, iterations: int, step_size: float) -> torch.Tensor:
        """Gradient ascent on (1, 3, H, W) `x` in [0, 1] over an image pyramid, coarse to fine."""
        steps = self.dream_steps(x, iterations, step_size)
        try:
            step = next(steps)
            while True:
                step = steps.send(step_together([step])[0])
        except StopIteration as done:
            return done.value

    def dream_steps(self, x: torch.Tensor, iterations: int, step_size: float):
        """dream() as a coroutine: yields a GradientStep for each gradient step, is sent the stepped image, and
        returns the result."""
        if iterations <= 0 or step_size <= 0:
            return x
        h, w = x.shape[-2:]
        shapes = [(round(h / self.octave_scale ** k), round(w / self.octave_scale ** k)) for k in range(self.octaves)]
        detail = torch.zeros_like(x)
        for level, shape in enumerate(reversed(shapes)):
            with torch.no_grad():
                # each level starts from the image at its scale plus the detail dreamt at the coarser one
                base = x if shape == (h, w) else F.interpolate(x, size=shape, mode="bilinear", antialias=True,
                                                                align_corners=False)
                img = base + _resize(detail, shape)
            for step in range(iterations):
                img = yield GradientStep(self, img, step_size, (level, step))
            detail = img - base
        return (x + detail).clamp(0.0, 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the dream layer for (1, 3, H, W) `x`, as (C, H'*W')."""
        with torch.no_grad(), self._capture() as acts:
            return self._forward(x, acts)[0][0].flatten(1)

    def hook_count(self) -> int:
        """Forward hooks alive on the dream network; 0 between calls (the kiosk runs for weeks)."""
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in self.net.modules())

    # ---- internals ---------------------------------------------------------------------------------

    def _loss(self, act: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        """What a step climbs, for one image: (1, C, h, w) activations and, with the class pull, (1, 1000) logits."""
        loss = self._objective(act)
        if self._class_pull:
            # the two terms on one scale: the layer objective relative to its own size (its gradient is that of
            # its log), plus the log-probability of the heard class's ImageNet classes together
            class_logp = logits.log_softmax(1)[0, self.classes].logsumexp(0)
            loss = loss / loss.detach().abs().clamp_min(1e-8) + self.class_weight * class_logp
        return loss

    def _reseed(self, x: torch.Tensor, before: float, after: float) -> torch.Tensor:
        """Fade in the centre copy of the seed that is due at this point of the travel (see RESEED)."""
        if self.reseed <= 0 or after <= before:
            return x
        span = -math.log(self.reseed)
        k = math.floor(after / span)
        if k < 1:
            return x
        p0, p1 = (min(max((t - k * span) / RESEED_FADE, 0.0), 1.0) for t in (before, after))
        if p1 <= p0:
            return x
        w0, w1 = RESEED_ALPHA * p0, RESEED_ALPHA * p1
        rate = (w1 - w0) / (1.0 - w0)  # the lerp that takes the copy's share from w0 to w1
        scale = self.reseed * math.exp(after - k * span)  # it appeared at RESEED and has grown with the zoom since
        theta = torch.tensor([[[1 / scale, 0.0, 0.0], [0.0, 1 / scale, 0.0]]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        copy_ = F.grid_sample(self.seed, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        r = grid.square().sum(-1).sqrt()[:, None]  # 1 on the ellipse inscribed in the copy
        mask = ((1.0 - r) / 0.5).clamp(0, 1)
        mask = mask * mask * (3 - 2 * mask)  # soft edge over the outer half: no frame around the copy
        return torch.lerp(x, copy_, mask * rate)

    @property
    def _class_pull(self) -> bool:
        return self.classes is not None and self.class_weight > 0

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

    def _forward(self, x: torch.Tensor, acts: dict, full: bool = False):
        """The dream layer's activations; with `full`, the ImageNet logits too, else (activations, None) and the
        layers after the dream layer never run."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        acts["stop"] = not full
        try:
            logits = self.net(x)
        except _StopForward:
            logits = None
        return acts.pop("out"), logits

    @contextmanager
    def _capture(self):
        """Hook the dream layer for the length of one call, and always take the hook off again."""
        acts = {}

        def hook(module, inputs, output):
            acts["out"] = output
            if acts.get("stop", True):
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
        seed = _to_tensor(rgb, self.shape, self.device)
        guide = self.features(seed)  # computed once per seed: every keyframe of the class matches against it
        self._guides[name] = (np.array(rgb, copy=True), seed, guide)
        while len(self._guides) > GUIDE_CACHE:
            self._guides.pop(next(iter(self._guides)))
        return seed, guide


def step_together(steps: list[GradientStep]) -> list[torch.Tensor]:
    """The gradient steps of several dreams in one forward and one backward pass; returns each one's new image.
    They must share a network, a layer and an image size (equal GradientStep.key). Each keeps its own jitter (its
    engine's rng), objective, guide features, ImageNet classes and step size, and nothing in the network mixes the
    images of a batch (eval mode, BatchNorm folded), so each result is what its step alone gives, within float
    tolerance."""
    if any(s.key != steps[0].key for s in steps):
        raise ValueError("dreams stepped together must share the network, the layer and the image size")
    lead = steps[0].engine
    shifts, rolled = [], []
    for s in steps:
        jitter = max(1, round(s.engine.jitter * min(s.image.shape[-2:]) / 224))
        oy, ox = torch.randint(-jitter, jitter + 1, (2,), generator=s.engine.rng).tolist()
        shifts.append((oy, ox))
        rolled.append(torch.roll(s.image, (oy, ox), (2, 3)))
    with torch.no_grad(), lead._capture() as acts, torch.enable_grad():
        batch = torch.cat(rolled).requires_grad_(True)
        # the layers after the dream layer run when any of the dreams pulls toward its ImageNet classes
        act, logits = lead._forward(batch, acts, full=any(s.engine._class_pull for s in steps))
        loss = sum(s.engine._loss(act[i:i + 1], None if logits is None else logits[i:i + 1])
                   for i, s in enumerate(steps))
        (grad,) = torch.autograd.grad(loss, batch)
    out = []
    for i, (s, (oy, ox)) in enumerate(zip(steps, shifts)):
        g = torch.roll(grad[i:i + 1], (-oy, -ox), (2, 3))
        if s.engine.smooth:
            g = _smooth(g)
        # normalised steps: the gradient's scale differs by layer, objective and image; its direction does not
        out.append((s.image + g * (s.step_size / (g.abs().mean() + 1e-8))).clamp(0.0, 1.0))
    return out


def profile_size(device: str | torch.device) -> int:
    """The dream's short side for this machine: as large as keeps several keyframes a second."""
    kind = torch.device(device).type
    return GPU_SIZE if kind == "cuda" else MPS_SIZE if kind == "mps" else SIZE


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8, the one host copy per keyframe."""
    return (x[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


def _to_tensor(rgb: np.ndarray, shape: tuple[int, int], device) -> torch.Tensor:
    """uint8 HxWx3 (or HxW grey, or HxWx4) -> (1, 3, height, width) in [0, 1]. The picture is fitted whole (never
    cropped: the subject stays in view) and the bands it leaves are filled with a blurred, enlarged copy of itself,
    which the dream then paints over like the rest."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise ValueError(f"seed must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    x = torch.from_numpy(np.array(rgb[..., :3]))  # a copy: the caller's array may be read-only
    x = x.to(device).permute(2, 0, 1)[None].float() / 255
    (h, w), (out_h, out_w) = x.shape[-2:], shape
    fit = min(out_h / h, out_w / w)
    nh, nw = min(out_h, round(h * fit)), min(out_w, round(w * fit))
    inner = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    if (nh, nw) == (out_h, out_w):
        return inner.clamp(0, 1).contiguous()
    cover = max(out_h / h, out_w / w)
    ch, cw = max(out_h, round(h * cover)), max(out_w, round(w * cover))
    top, left = (ch - out_h) // 2, (cw - out_w) // 2
    blurry = F.interpolate(x, size=(max(1, ch // FILL_BLUR), max(1, cw // FILL_BLUR)), mode="area")
    out = F.interpolate(blurry, size=(ch, cw), mode="bilinear", align_corners=False)[..., top:top + out_h,
                                                                                    left:left + out_w].clone()
    top, left = (out_h - nh) // 2, (out_w - nw) // 2
    out[..., top:top + nh, left:left + nw] = inner
    return out.clamp(0, 1).contiguous()


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """A separable 1-2-1 blur per channel, edges replicated."""
    k = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    c = x.shape[1]
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 3).expand(c, 1, 1, 3), groups=c)
    return F.conv2d(x, k.view(1, 1, 3, 1).expand(c, 1, 3, 1), groups=c)


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


def dream_network(backbone: ImageNetBackbone, device) -> ImageNetBackbone:
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
