"""Scores for a classifier's clip probabilities: accuracy, macro-F1, per-class figures, the confusion matrix."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def scores(labels, probs, class_names) -> dict:
    """accuracy, macro-F1, per-class precision/recall/F1/support, the confusion matrix (rows: truth) and the
    ten most frequent confusions."""
    labels = np.asarray(labels)
    pred = np.asarray(probs).argmax(-1)
    C = len(class_names)
    cm = np.zeros((C, C), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(C), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(C), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(C), where=(precision + recall) > 0)
    present = support > 0  # macro-F1 over the classes the test set contains
    off = cm.copy()
    np.fill_diagonal(off, 0)
    pairs = sorted(((int(off[i, j]), class_names[i], class_names[j]) for i, j in zip(*np.nonzero(off))),
                   reverse=True)[:10]
    return dict(accuracy=float(tp.sum() / max(1, cm.sum())), macro_f1=float(f1[present].mean()) if present.any() else 0.0,
                per_class={n: dict(precision=float(precision[i]), recall=float(recall[i]), f1=float(f1[i]),
                                   support=int(support[i])) for i, n in enumerate(class_names)},
                confusion=cm.tolist(), top_confusions=[dict(true=t, predicted=p, count=c) for c, t, p in pairs])


def report_text(s: dict) -> str:
    lines = [f"accuracy {s['accuracy']:.4f}   macro-F1 {s['macro_f1']:.4f}", "",
             f"{'class':<20}{'prec':>7}{'recall':>8}{'f1':>7}{'n':>5}"]
    for name, c in sorted(s["per_class"].items(), key=lambda kv: kv[1]["f1"]):
        lines.append(f"{name:<20}{c['precision']:7.3f}{c['recall']:8.3f}{c['f1']:7.3f}{c['support']:5d}")
    lines += ["", "top confusions (true -> predicted: clips)"]
    lines += [f"  {c['true']} -> {c['predicted']}: {c['count']}" for c in s["top_confusions"]]
    return "\n".join(lines)


def confusion_png(cm, class_names, path, title="") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=float)
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(6, n * 0.22 + 2), max(5, n * 0.22 + 1.5)), dpi=100)
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=6 if n > 20 else 9)
    ax.set_yticks(range(n), class_names, fontsize=6 if n > 20 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(s: dict, class_names, out_dir, tag: str) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{tag}.json").write_text(json.dumps(s, indent=1))
    (out_dir / f"{tag}.txt").write_text(report_text(s) + "\n")
    confusion_png(s["confusion"], class_names, out_dir / f"{tag}_confusion.png",
                  f"{tag}: acc {s['accuracy']:.3f}, macro-F1 {s['macro_f1']:.3f}")
