"""What each classifier backbone costs here: a training step and a 4 s window's inference, in one run.

    python benchmarks/train_bench.py            # ~5 min on 2 cores, prints a Markdown table
    python benchmarks/train_bench.py --quick    # a smoke run

Random init for every backbone (speed does not depend on the weights; no ResNet ImageNet weights can be
downloaded here). A training step is forward + backward + AdamW on a batch of 32 log-mel spectrograms (32
raw 4 s waveforms for the 1-D CNN), channels-last, as `models/train.py` does it. Backbones take turns round by
round, so a neighbour's load hits all of them alike; the table gives medians and the ratio to Lite0 from the
same run, and what a 25-epoch run over ESC-50 folds 1-3 (1200 clips, 38 steps per epoch) would take.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP; see dream_bench.py

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import audio  # noqa: E402
from models.model import build_model  # noqa: E402
from models.waveform_cnn import WaveformCNN  # noqa: E402

BACKBONES = ("efficientnet_lite0", "resnet18", "resnet34", "resnet50", "waveform_cnn")
BATCH = 32
STEPS_PER_EPOCH = 38  # 1200 clips / 32
CLASSES = [f"c{i}" for i in range(50)]


def make(name: str):
    model = WaveformCNN(CLASSES) if name == "waveform_cnn" else build_model(name, CLASSES, pretrained=False)
    return model.to(memory_format=torch.channels_last)


def train_step(model, opt, waves, labels) -> float:
    t0 = time.perf_counter()
    model.train()
    loss = F.cross_entropy(model(model.inputs(waves)), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


@torch.no_grad()
def infer_window(model, wave) -> float:
    t0 = time.perf_counter()
    model.eval()
    model(model.inputs(wave)).softmax(-1)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    torch.set_num_threads(2)
    rounds = 2 if args.quick else args.rounds
    names = BACKBONES[:1] + BACKBONES[-1:] if args.quick else BACKBONES
    gen = torch.Generator().manual_seed(0)
    waves = 0.1 * torch.randn(BATCH, audio.N_SAMPLES, generator=gen)
    labels = torch.randint(0, len(CLASSES), (BATCH,), generator=gen)
    models = {n: make(n) for n in names}
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()}
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    steps = {n: [] for n in names}
    infer = {n: [] for n in names}
    for n in names:  # warm-up: first calls allocate and pick kernels
        train_step(models[n], opts[n], waves, labels)
        infer_window(models[n], waves[:1])
    for _ in range(rounds):
        for n in names:
            steps[n].append(train_step(models[n], opts[n], waves, labels))
            infer[n] += [infer_window(models[n], waves[:1]) for _ in range(5)]
    base_step, base_infer = statistics.median(steps[names[0]]), statistics.median(infer[names[0]])
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{rounds} rounds\n")
    print("| backbone | parameters | training step, batch 32 | x Lite0 | 25 epochs of 1200 clips | "
          "inference, one 4 s window | x Lite0 |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        st, inf = statistics.median(steps[n]), statistics.median(infer[n])
        print(f"| {n} | {params[n] / 1e6:.1f} M | {st:.2f} s | {st / base_step:.2f} | "
              f"{st * STEPS_PER_EPOCH * 25 / 60:.0f} min | {inf * 1000:.0f} ms | {inf / base_infer:.2f} |")


if __name__ == "__main__":
    main()
