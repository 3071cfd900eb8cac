"""Dream engine benchmark: keyframes per second against the paper's loop, and a quality check.

    python benchmarks/dream_bench.py            # full run (~15 min on 2 cores), prints a Markdown report
    python benchmarks/dream_bench.py --write    # ... and replaces the "Dream engine" section of BENCHMARKS.md
    python benchmarks/dream_bench.py --quick    # a smoke run

Speed: DreamEngine.next_keyframe at 224 and 448 px for efficientnet_lite0 and resnet50 (random init: speed does not
depend on the weights), and in the same run, interleaved round by round so that a neighbour's load hits both alike,
a re-implementation of the paper's loop at equal settings (same octaves, steps, objective, zoom and blend). The
paper's code is the classic Caffe DeepDream notebook ported to torch as it was: images live in numpy, every step
rolls with np.roll, copies the image into a tensor and the gradient back out, runs the whole network with a forward
hook (torch has no `forward(end=layer)`), computes the guided objective in numpy on a host copy of the activations,
back-propagates with the parameters still requiring gradients (torch's default, and what Caffe's backward did),
and resizes octaves and zooms with scipy.ndimage.

Quality: 60 keyframes zooming into seed_images/cat/chelsea.jpg with real efficientnet_lite0 ImageNet weights at
the defaults; the ImageNet head must keep the seed's class in its top-5 for >= 80 % of keyframes, consecutive
keyframes must keep changing, and no frame may be black, blown out or flat.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: with the default (spinning) wait policy, 2 threads on a 2-core box that anything else
# is using run several times slower than 1 thread; PASSIVE threads sleep instead. See "Threads" in the report.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import dream  # noqa: E402
from models.backbones import create_backbone  # noqa: E402
from models.dream import DreamEngine as _Engine, is_degenerate  # noqa: E402
from models.seeds import load_seed_image, seed_image_path  # noqa: E402


def DreamEngine(*args, **kwargs):  # noqa: N802
    """The engine as this benchmark measured it against the paper's loop (square, pulled back to the seed): the
    comparison stays at equal settings. The travelling defaults are measured in benchmarks/dream_travel.py."""
    return _Engine(*args, **{**LEGACY, **kwargs})


LEGACY = {"aspect": 1.0, "blend": 0.2, "smooth": False, "crossfade": 8}

DATE = "2026-11-21"
MACHINE = ("2-core CPU (AMD EPYC, virtualised), no GPU; torch.set_num_threads(2), OMP_WAIT_POLICY=PASSIVE; "
           "CPU shared with a training run and other engineers' tests")
SEED_IMAGE = seed_image_path("cat")
QUALITY_KEYFRAMES = 60
QUALITY_TOP5 = 0.8  # share of keyframes whose top-5 must hold the seed's ImageNet class
QUALITY_MIN_CHANGE = 1.0  # mean |difference| between consecutive keyframes, in 0-255 levels
TARGET_KFPS = 4.0  # efficientnet_lite0 at 224
TARGET_RATIO = 3.0
# Measured by hand on this machine the same day, not re-measured by this script (kept so the numbers stay in view).
EARLIER = ("Observed earlier on " + DATE + " (not re-measured by this script): with a training run and another "
           "engineer's test suite on the box (load average ~7), 2 threads with the default wait policy collapsed to "
           "0.17-0.75 keyframes/s against 6.1-7.1 with PASSIVE and 5.1-6.2 with 1 thread (lite0, 224, back-to-back "
           "processes); with a 2-thread torch neighbour started for the test (other jobs still running): 0.39 "
           "(default), 6.20 (PASSIVE), 1.44 (1 thread). Three full "
           "runs of this script that day gave lite0-at-224 ratios of 5.6x, 6.7x and 7.1x and resnet50-at-448 ratios "
           "of 2.4x, 2.6x and 2.0x: the spread is the shared CPU.")


# ---- the paper's loop, as its code had it ----------------------------------------------------------------

class PaperLoop:
    """The Caffe-notebook DeepDream loop (make_step / deepdream / the zoom loop), ported line for line."""

    def __init__(self, backbone, layer: str, size: int, seed_rgb: np.ndarray, octaves: int, octave_scale: float,
                 iterations: int, step_size: float, jitter: int, zoom: float, blend: float, seed: int = 0):
        import scipy.ndimage as nd

        self.nd, self.model = nd, backbone.eval()  # parameters left requiring grad, as a straight port leaves them
        self.layer = backbone.layer(layer)
        self.octaves, self.octave_scale, self.iterations = octaves, octave_scale, iterations
        self.step_size, self.jitter, self.zoom, self.blend = step_size, jitter, zoom, blend
        self.rng = np.random.RandomState(seed)
        seed_t = dream._to_tensor(seed_rgb, (size, size), "cpu")
        self.seed = seed_t[0].numpy().copy()  # (3, H, W) float32 in [0, 1]
        self.guide = self._activations(self.seed).reshape(self._act_channels, -1)
        self.frame = self.seed.copy()

    def _activations(self, img: np.ndarray) -> np.ndarray:
        out = {}
        handle = self.layer.register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
        with torch.no_grad():
            self.model(torch.from_numpy(img[None].copy()))
        handle.remove()
        self._act_channels = out["a"].shape[1]
        return out["a"][0].numpy().copy()

    def make_step(self, src: np.ndarray, zoom_speed: float, intensity: float) -> np.ndarray:
        ox, oy = self.rng.randint(-self.jitter, self.jitter + 1, 2)
        src = np.roll(np.roll(src, ox, -1), oy, -2)  # apply jitter shift
        x = torch.from_numpy(src[None].copy()).requires_grad_(True)  # host -> framework copy
        out = {}
        handle = self.layer.register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
        self.model(x)  # the whole network: torch has no forward(end=layer)
        handle.remove()
        act = out["a"]
        a = act.detach()[0].numpy().copy()  # objective_guide works on a host copy of the activations
        ch = a.shape[0]
        A = a.reshape(ch, -1).T.dot(self.guide)
        diff = self.guide[:, A.argmax(1)].reshape(a.shape)
        act.backward(torch.from_numpy(diff[None]))  # dst.diff = ...; net.backward(start=end)
        g = x.grad[0].numpy().copy()  # gradient back to the host
        src = src + self.step_size * intensity / (np.abs(g).mean() + 1e-8) * g
        src = np.roll(np.roll(src, -ox, -1), -oy, -2)  # unshift image
        self.model.zero_grad(set_to_none=True)
        return np.clip(src, 0.0, 1.0)

    def deepdream(self, base: np.ndarray, iterations: int, intensity: float) -> np.ndarray:
        octaves = [base]
        for _ in range(self.octaves - 1):
            octaves.append(self.nd.zoom(octaves[-1], (1, 1.0 / self.octave_scale, 1.0 / self.octave_scale), order=1))
        detail = np.zeros_like(octaves[-1])
        src = base
        for octave, octave_base in enumerate(octaves[::-1]):
            h, w = octave_base.shape[-2:]
            if octave > 0:
                h1, w1 = detail.shape[-2:]
                detail = self.nd.zoom(detail, (1, 1.0 * h / h1, 1.0 * w / w1), order=1)
            src = octave_base + detail
            for _ in range(iterations):
                src = self.make_step(src, 0, intensity)
            detail = src - octave_base
        return src

    def next_keyframe(self, intensity: float = 1.0, zoom_speed: float = 0.5) -> np.ndarray:
        c, h, w = self.frame.shape
        s = self.zoom * zoom_speed
        frame = self.nd.affine_transform(self.frame, [1, 1 - s, 1 - s], [0, h * s / 2, w * s / 2], order=1)
        frame = frame * (1 - self.blend) + self.seed * self.blend
        self.frame = self.deepdream(frame.astype(np.float32), int(np.ceil(self.iterations * intensity)), intensity)
        return np.uint8(np.clip(self.frame.transpose(1, 2, 0) * 255 + 0.5, 0, 255))


def paper_loop_for(engine: DreamEngine, backbone, seed_rgb) -> PaperLoop:
    return PaperLoop(backbone, engine.layer, engine.size, seed_rgb, engine.octaves, engine.octave_scale,
                     engine.iterations, engine.step_size, engine.jitter, engine.zoom, engine.blend)


# ---- measurements ---------------------------------------------------------------------------------------------

def _rate(step, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t)


def speed(backbone_name: str, size: int, rounds: int, per_round: int, ref_per_round: int, seed_rgb) -> dict:
    pretrained = backbone_name == "efficientnet_lite0"  # its weights ship with the package; resnet50's would download
    backbone = create_backbone(backbone_name, pretrained=pretrained)
    engine = DreamEngine(backbone, size=size, device="cpu")
    engine.set_seed("seed", seed_rgb)
    paper = paper_loop_for(engine, backbone, seed_rgb)
    variants = {"engine": engine.next_keyframe, "paper": paper.next_keyframe}
    for step in variants.values():  # warm up: first calls build kernels and caches
        step()
        step()
    rates = {k: [] for k in variants}
    for _ in range(rounds):  # interleaved, so that a neighbour's load lands on both alike
        rates["engine"].append(_rate(variants["engine"], per_round))
        rates["paper"].append(_rate(variants["paper"], ref_per_round))
    ratios = [e / p for e, p in zip(rates["engine"], rates["paper"])]
    return dict(backbone=backbone_name, size=size, layer=engine.layer, engine=statistics.median(rates["engine"]),
                engine_best=max(rates["engine"]), paper=statistics.median(rates["paper"]),
                ratio=statistics.median(ratios), rounds=rounds)


def ablation(size: int, rounds: int, per_round: int, seed_rgb) -> dict:
    """Where the engine's speed comes from, on efficientnet_lite0: each row adds one change to the paper's loop."""
    backbone = create_backbone("efficientnet_lite0", pretrained=True)
    engine = DreamEngine(backbone, size=size, device="cpu")
    engine.set_seed("seed", seed_rgb)
    paper = paper_loop_for(engine, backbone, seed_rgb)
    frozen = paper_loop_for(engine, create_backbone("efficientnet_lite0", pretrained=True).requires_grad_(False),
                            seed_rgb)
    plain = DreamEngine(backbone, size=size, device="cpu")  # the engine without BN folding and channels-last
    plain.net, plain.channels_last = _unfused(backbone), False
    plain.set_seed("seed", seed_rgb)
    variants = {"paper's loop": paper.next_keyframe, "+ frozen weights": frozen.next_keyframe,
                "engine, no BN folding / channels-last": plain.next_keyframe, "engine": engine.next_keyframe}
    for step in variants.values():
        step()
        step()
    rates = {k: [] for k in variants}
    for _ in range(rounds):
        for k, step in variants.items():
            rates[k].append(_rate(step, per_round))
    return {k: statistics.median(v) for k, v in rates.items()}


def _unfused(backbone):
    import copy

    return copy.deepcopy(backbone).eval().requires_grad_(False)


# A torch job next door with 2 threads and OpenMP's defaults, like a training run or a classifier process.
NEIGHBOUR = "import torch\ntorch.set_num_threads(2)\na = torch.randn(384, 384)\nwhile True:\n    a = (a @ a).tanh()"
THREAD_SETTINGS = {  # name -> (threads, OMP_WAIT_POLICY or None for the library default)
    "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, "PASSIVE"),
    "2 threads, default wait policy": (2, None),
    "1 thread": (1, "PASSIVE"),
}


def threads(rounds: int = 2) -> dict:
    """efficientnet_lite0 engine keyframes/s at 224 under each thread setting, each in a fresh process (the wait
    policy is read once, when OpenMP loads), with and without a 2-thread torch job running next door (as a
    classifier or a training run do). Interleaved round by round; medians."""
    rates = {(k, busy): [] for k in THREAD_SETTINGS for busy in (False, True)}
    for _ in range(rounds):
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=_without_wait_policy()) if busy else None
            try:
                for name, (n, policy) in THREAD_SETTINGS.items():
                    env = _without_wait_policy()
                    if policy:
                        env["OMP_WAIT_POLICY"] = policy
                    out = subprocess.run([sys.executable, __file__, "--probe", "--threads", str(n)], env=env,
                                         capture_output=True, text=True, check=True).stdout
                    rates[(name, busy)].append(float(out.split()[-1]))
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    return {k: statistics.median(v) for k, v in rates.items()}


def _without_wait_policy() -> dict:
    return {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}


def probe(keyframes: int = 6) -> float:
    engine = DreamEngine(create_backbone("efficientnet_lite0", pretrained=False), size=224, device="cpu")
    engine.set_seed("seed", load_seed_image(SEED_IMAGE))
    engine.next_keyframe()
    return _rate(engine.next_keyframe, keyframes)


def quality(keyframes: int = QUALITY_KEYFRAMES, seeds=(0, 1, 2), size: int = 224) -> list[dict]:
    backbone = create_backbone("efficientnet_lite0", pretrained=True).eval()
    seed_rgb = load_seed_image(SEED_IMAGE)
    with torch.no_grad():
        seed_class = backbone(dream._to_tensor(seed_rgb, (size, size), "cpu")).argmax(1).item()
    results = []
    for s in seeds:
        engine = DreamEngine(backbone, size=size, device="cpu", seed=s)
        engine.set_seed("cat", seed_rgb)
        frames = [engine.next_keyframe(1.0, 0.5) for _ in range(keyframes)]
        results.append(dict(seed=s, seed_class=seed_class, **judge(backbone, frames, seed_class)))
    return results


def judge(backbone, frames: list[np.ndarray], seed_class: int) -> dict:
    """The automated quality check, shared with tests/test_dream.py."""
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    if x.shape[-1] != 224:
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        top5 = torch.cat([backbone(chunk).topk(5, dim=1).indices for chunk in x.split(16)])
    hits = (top5 == seed_class).any(1).float()
    changes = [float(np.abs(a.astype(np.int16) - b).mean()) for a, b in zip(frames[1:], frames)]
    return dict(top5=hits.mean().item(), mean_change=float(np.mean(changes)), min_change=float(np.min(changes)),
                degenerate=sum(is_degenerate(f) for f in frames))


# ---- report ---------------------------------------------------------------------------------------------------

def report(speeds: list[dict], ablate: dict | None, thread_rates: dict | None, quals: list[dict],
           wall: float) -> str:
    d = dream
    lines = ["## Dream engine", "",
             f"Date: {DATE}. Machine: {MACHINE}. Torch {torch.__version__}, Python {platform.python_version()}.",
             f"Command: `python benchmarks/dream_bench.py --write` ({wall / 60:.0f} min).", "",
             "**Method.** `DreamEngine.next_keyframe()` at its defaults (guided objective, "
             f"{d.OCTAVES} octaves x {d.ITERATIONS} steps at scale {d.OCTAVE_SCALE}, step {d.STEP_SIZE}, jitter "
             f"{d.JITTER}, zoom {d.ZOOM} x 0.5, blend {d.BLEND}), intensity 1, seed `seed_images/cat/chelsea.jpg`. "
             "The paper's loop (numpy images, np.roll jitter, scipy.ndimage zoom for octaves and the zoom step, host "
             "copies of image, activations and gradient every step, whole-network forward with a hook, parameters "
             "requiring grad) runs at equal settings in the same process, interleaved with the engine round by round; "
             "rates are medians over rounds and the ratio is the median of per-round ratios, because the CPU was "
             "shared with a training run and absolute rates moved with its load. resnet50 runs from random init "
             "(speed does not depend on the weights); efficientnet_lite0 has its ImageNet weights.", "",
             "| backbone | layer | size | engine keyframes/s | paper's loop keyframes/s | engine / paper |",
             "|---|---|---|---|---|---|"]
    for r in speeds:
        lines.append(f"| {r['backbone']} | {r['layer']} | {r['size']} | {r['engine']:.2f} (best round "
                     f"{r['engine_best']:.2f}) | {r['paper']:.2f} | {r['ratio']:.1f}x |")
    lite = [r for r in speeds if r["backbone"] == "efficientnet_lite0" and r["size"] == 224]
    if lite:
        r = lite[0]
        fast, ahead = r["engine"] >= TARGET_KFPS, r["ratio"] >= TARGET_RATIO
        lines += ["", f"Targets: >= {TARGET_KFPS:g} keyframes/s for efficientnet_lite0 at 224: "
                      f"**{'met' if fast else 'NOT met'}** ({r['engine']:.2f}); >= {TARGET_RATIO:g}x the paper's "
                      f"loop: **{'met' if ahead else 'NOT met'}** ({r['ratio']:.1f}x)."]
    if ablate:
        base = ablate["paper's loop"]
        lines += ["", "Where the speed comes from (efficientnet_lite0, 224 px, same run, medians):", "",
                  "| variant | keyframes/s | vs paper's loop |", "|---|---|---|"]
        lines += [f"| {k} | {v:.2f} | {v / base:.1f}x |" for k, v in ablate.items()]
        lines += ["", "The engine stops the forward pass at the dream layer, freezes the weights (no weight "
                      "gradients), folds every BatchNorm into its conv, uses channels-last memory, and keeps the "
                      "image, octaves, jitter, zoom and guided matching in torch."]
    if thread_rates:
        lines += ["", "**Threads** (efficientnet_lite0 engine at 224, keyframes/s, a fresh process per setting, same "
                      "run, medians; \"torch job next door\" = another process multiplying matrices with 2 threads and "
                      "OpenMP's defaults). The tables above ran with 2 threads and OMP_WAIT_POLICY=PASSIVE:", "",
                  "| setting | as found | torch job next door |", "|---|---|---|"]
        lines += [f"| {k} | {thread_rates[(k, False)]:.2f} | {thread_rates[(k, True)]:.2f} |"
                  for k in THREAD_SETTINGS]
        lines += ["", "With OpenMP's default wait policy, threads spin while they wait; two such processes on two "
                      "cores most likely keep descheduling each other's threads mid-way through every parallel region. "
                      "PASSIVE threads sleep instead. Every torch process on the kiosk (server, classifier, training) "
                      "should set `OMP_WAIT_POLICY=PASSIVE` before torch is imported.", "", EARLIER]
    lines += ["", f"**Quality** ({QUALITY_KEYFRAMES} keyframes at 224, efficientnet_lite0 ImageNet head on every "
                  f"keyframe, seed class {quals[0]['seed_class'] if quals else '?'} = Egyptian cat; pass: top-5 hit "
                  f">= {QUALITY_TOP5:.0%}, mean change between consecutive keyframes > {QUALITY_MIN_CHANGE:g} "
                  "levels, no black / blown-out / flat frame):", "",
              "| jitter seed | seed class in top-5 | mean change | min change | degenerate frames | pass |",
              "|---|---|---|---|---|---|"]
    for q in quals:
        ok = q["top5"] >= QUALITY_TOP5 and q["min_change"] > QUALITY_MIN_CHANGE and q["degenerate"] == 0
        lines.append(f"| {q['seed']} | {q['top5']:.0%} | {q['mean_change']:.1f} | {q['min_change']:.1f} | "
                     f"{q['degenerate']} | {'yes' if ok else 'NO'} |")
    lines += ["", "**Not measured:** GPU or Apple-silicon speed (no accelerator here; on a GPU the paper's per-step "
                  "host copies would cost relatively more); a quiet machine (absolute rates above are lower than an "
                  "idle 2-core box gives, the ratios are the comparable numbers); resnet50 dream quality (no "
                  "ImageNet weights offline); memory over days of running (tests check for hook and tensor growth "
                  "over hundreds of keyframes only); how people perceive the dreams.", ""]
    return "\n".join(lines)


def write_section(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace this benchmark's own section of BENCHMARKS.md (other sections belong to others) or append it."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find("## Dream engine")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + 1)
        new = old[:start] + text + ("" if end < 0 else old[end:])
    path.write_text(new.rstrip("\n") + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: few rounds, lite0 at 224 only")
    p.add_argument("--write", action="store_true", help="replace the Dream engine section of BENCHMARKS.md")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # one timing, for threads()
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe:
        print(f"{probe():.3f}")
        return 0
    seed_rgb = load_seed_image(SEED_IMAGE)
    t0 = time.perf_counter()
    if args.quick:
        plan = [("efficientnet_lite0", 224, 2, 4, 1)]
    else:  # (backbone, size, rounds, engine keyframes per round, paper keyframes per round)
        plan = [("efficientnet_lite0", 224, 5, 10, 2), ("efficientnet_lite0", 448, 3, 4, 1),
                ("resnet50", 224, 3, 3, 1), ("resnet50", 448, 2, 1, 1)]
    speeds = []
    for name, size, rounds, n, n_ref in plan:
        speeds.append(speed(name, size, rounds, n, n_ref, seed_rgb))
        print(f"{name} {size}: engine {speeds[-1]['engine']:.2f} kf/s, paper {speeds[-1]['paper']:.2f} kf/s, "
              f"ratio {speeds[-1]['ratio']:.1f}x", flush=True)
    ablate = None if args.quick else ablation(224, 3, 2, seed_rgb)
    thread_rates = None if args.quick else threads()
    quals = quality(keyframes=20 if args.quick else QUALITY_KEYFRAMES, seeds=(0,) if args.quick else (0, 1, 2))
    text = report(speeds, ablate, thread_rates, quals, time.perf_counter() - t0)
    print(text)
    if args.write:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
