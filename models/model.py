"""The sound classifier: a log-mel "image" through an ImageNet backbone to one logit per sound class.

A checkpoint alone is enough to serve: it records the class names, the backbone and the feature
settings, and `load_model` refuses one whose settings do not match this code. A checkpoint may hold
an ensemble: several classifiers of one backbone whose probabilities are averaged.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import UserError
from models import audio, efficientat
from models.backbones import ImageNetBackbone, create_backbone

CHECKPOINT_FORMAT = 1
SHIPPED_CHECKPOINT = Path(__file__).parent / "checkpoints" / "esc50_efficientat_mn04.pt"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, corrupt or made for other settings; the message names the file and the fix."""


class SoundClassifier(nn.Module):
    def __init__(self, backbone: ImageNetBackbone, class_names: list[str], dropout: float = 0.2):
        super().__init__()
        self.backbone = backbone
        self.class_names = list(class_names)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.feature_dim, len(class_names))
        self.trained = False  # set by load_model from the checkpoint; an untrained head must say so

    @staticmethod
    def inputs(waves: torch.Tensor) -> torch.Tensor:
        """(B, N_SAMPLES) waveforms -> what `forward` takes: the log-mel spectrogram."""
        return audio.log_mel_spectrogram(waves)

    @staticmethod
    def spectrogram_to_image(mel: torch.Tensor) -> torch.Tensor:
        """(B, N_MELS, N_FRAMES) scaled log-mel -> (B, 3, N_MELS, N_FRAMES) in [0, 1], low frequencies at the bottom."""
        img = ((mel + 1.0) / 2.0).clamp(0.0, 1.0).flip(-2)
        return img.unsqueeze(1).expand(-1, 3, -1, -1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone.embed(self.spectrogram_to_image(mel))))

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, N_SAMPLES) waveforms -> the backbone's pooled features, what a linear probe fits on."""
        return self.backbone.embed(self.spectrogram_to_image(self.inputs(waves)))

    @torch.no_grad()
    def predict(self, waveforms: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, N_SAMPLES) or (N_SAMPLES,) at SAMPLE_RATE -> (B, n_classes) probabilities."""
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(waveforms, dtype=np.float32), device=device)
        x = audio.pad_or_trim(x.reshape(-1, x.shape[-1]))
        return self(self.inputs(x)).softmax(-1).cpu().numpy()


class TaggingClassifier(nn.Module):
    """EfficientAT mn04 hears a window once: from its 384-d embedding, one head names the sound class and the
    network's own AudioSet head gives the 527 tags that the gate reads (background, speech, music)."""

    def __init__(self, class_names: list[str], net: efficientat.MN04 | None = None, dropout: float = 0.2):
        super().__init__()
        self.front_end = efficientat.LogMel()
        self.backbone = net if net is not None else efficientat.load_mn04(None)
        self.class_names = list(class_names)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(efficientat.EMBED_DIM, len(class_names))
        self.trained = False
        self.tag_names = efficientat.audioset_labels()

    @staticmethod
    def inputs(waves: torch.Tensor) -> torch.Tensor:
        """(B, samples) at the project's SAMPLE_RATE -> the same sound at the network's 32 kHz."""
        up = efficientat.to_model_rate(waves.detach().cpu().numpy(), audio.SAMPLE_RATE)
        return torch.from_numpy(up).to(waves.device)

    def heads(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, mels, frames) -> (class logits, AudioSet tag logits)."""
        embedding = self.backbone.embed(mel)
        return self.head(self.dropout(embedding)), self.backbone.tag_logits(embedding)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.heads(self.front_end(waves))[0]

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, N_SAMPLES) waveforms at SAMPLE_RATE -> the network's 384-d embedding, what a linear probe fits on."""
        return self.backbone.embed(self.front_end(self.inputs(waves)))

    @torch.no_grad()
    def log_mels(self, waveforms: np.ndarray | torch.Tensor) -> tuple[int, list[tuple[list[int], torch.Tensor]]]:
        """(B, N_SAMPLES) or (N_SAMPLES,) at SAMPLE_RATE -> (B, [(rows, their log-mel)]). The network pools over
        time, so each window is heard from its sound's onset (audio.from_onset); windows cut to the same length
        share a batch."""
        device = next(self.parameters()).device
        wins = np.asarray(waveforms.cpu() if isinstance(waveforms, torch.Tensor) else waveforms, dtype=np.float32)
        heard = [audio.from_onset(w) for w in audio.pad_or_trim(wins.reshape(-1, wins.shape[-1]))]
        groups = []
        for length in sorted({len(h) for h in heard}):
            rows = [i for i, h in enumerate(heard) if len(h) == length]
            x = torch.from_numpy(np.stack([heard[i] for i in rows])).to(device)
            groups.append((rows, self.front_end(self.inputs(x))))
        return len(heard), groups

    @torch.no_grad()
    def from_log_mels(self, mels: tuple[int, list[tuple[list[int], torch.Tensor]]]) -> tuple[np.ndarray, np.ndarray]:
        """log_mels' batches -> class probabilities and AudioSet tag probabilities, one forward pass per window."""
        logits, tags, _ = self.outputs(mels)
        return torch.from_numpy(logits).softmax(-1).numpy(), tags

    @torch.no_grad()
    def outputs(self, mels: tuple[int, list[tuple[list[int], torch.Tensor]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """log_mels' batches -> class logits, AudioSet tag probabilities and the 384-d embedding they were read
        from (what a taught sound is recognised by: models/taught.py), one forward pass per window."""
        count, groups = mels
        logits = np.zeros((count, len(self.class_names)), np.float32)
        tags = np.zeros((count, len(self.tag_names)), np.float32)
        embeddings = np.zeros((count, efficientat.EMBED_DIM), np.float32)
        for rows, mel in groups:
            embedding = self.backbone.embed(mel)
            logits[rows] = self.head(self.dropout(embedding)).cpu().numpy()
            tags[rows] = self.backbone.tag_logits(embedding).sigmoid().cpu().numpy()
            embeddings[rows] = embedding.cpu().numpy()
        return logits, tags, embeddings

    def predict_with_tags(self, waveforms: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(B, N_SAMPLES) or (N_SAMPLES,) at SAMPLE_RATE -> class probabilities and AudioSet tag probabilities."""
        return self.from_log_mels(self.log_mels(waveforms))

    def predict(self, waveforms: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.predict_with_tags(waveforms)[0]


class Ensemble(nn.Module):
    """Classifiers of one class list, backbone and signal chain whose probabilities are averaged: models
    trained with other seeds get different clips wrong, and their average is right more often than either
    (BENCHMARKS.md). It is heard through `predict` / `predict_with_tags`, never called as a network."""

    def __init__(self, members: list[SoundClassifier]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one classifier")
        first = members[0]
        for m in members[1:]:
            if m.class_names != first.class_names or m.backbone.name != first.backbone.name:
                raise CheckpointError("ensemble members must share class names and backbone")
        self.members = nn.ModuleList(members)
        self.class_names = first.class_names
        self.tag_names = getattr(first, "tag_names", None)

    @property
    def backbone(self) -> ImageNetBackbone:
        return self.members[0].backbone

    @property
    def trained(self) -> bool:
        return all(m.trained for m in self.members)

    @trained.setter
    def trained(self, value: bool):
        for m in self.members:
            m.trained = value

    def predict(self, waveforms: np.ndarray | torch.Tensor) -> np.ndarray:
        if self.tag_names:
            return self.predict_with_tags(waveforms)[0]
        return np.mean([m.predict(waveforms) for m in self.members], 0)

    def predict_with_tags(self, waveforms: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The members' mean class probabilities and mean AudioSet tags. The members share one front end, so a
        window is cut, resampled and turned into a log-mel once."""
        mels = self.members[0].log_mels(waveforms)
        heard = [m.from_log_mels(mels) for m in self.members]
        return np.mean([p for p, _ in heard], 0), np.mean([t for _, t in heard], 0)


def hear(model, waveforms: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(B, N_SAMPLES) windows -> class probabilities, and AudioSet tag probabilities where the model has them."""
    if getattr(model, "tag_names", None):
        return model.predict_with_tags(waveforms)
    return model.predict(waveforms), None


def build_model(backbone: str, class_names: list[str], pretrained: bool = True,
                weights_path: str | Path | None = None) -> SoundClassifier | TaggingClassifier:
    if backbone == efficientat.NAME:
        weights = weights_path or efficientat.PRETRAINED_WEIGHTS
        return TaggingClassifier(class_names, efficientat.load_mn04(weights if pretrained else None))
    return SoundClassifier(create_backbone(backbone, pretrained, weights_path), class_names)


def feature_settings(backbone: str) -> dict:
    if backbone == efficientat.NAME:
        return {**efficientat.feature_settings(audio.SAMPLE_RATE), "n_samples": audio.N_SAMPLES}
    return audio.feature_settings()


def save_checkpoint(model: SoundClassifier | Ensemble, path: str | Path, **extra) -> Path:
    """fp16 weights plus everything serving needs; `extra` (recipe, metrics) is stored as-is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    members = len(model.members) if isinstance(model, Ensemble) else None
    torch.save(dict(format=CHECKPOINT_FORMAT, backbone=model.backbone.name, class_names=model.class_names,
                    features=feature_settings(model.backbone.name), state_dict=state, members=members, **extra), path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train one with `hear-and-see train` "
                              f"or use the shipped {SHIPPED_CHECKPOINT}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); "
                              f"re-copy or retrain it") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a hear-and-see checkpoint of format {CHECKPOINT_FORMAT}")
    return ckpt


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu",
               backbone: str | None = None) -> SoundClassifier | Ensemble:
    """Load a trained classifier (or ensemble). `backbone`, when given, must match the checkpoint's."""
    path = Path(path) if path is not None else SHIPPED_CHECKPOINT
    return _model_from(read_checkpoint(path), path, backbone).to(device).eval()


def _model_from(ckpt: dict, path: Path, backbone: str | None = None) -> SoundClassifier | Ensemble:
    if backbone is not None and backbone != ckpt["backbone"]:
        raise CheckpointError(f"{path}: checkpoint is for backbone {ckpt['backbone']!r}, "
                              f"but {backbone!r} was asked for; set backbone = \"{ckpt['backbone']}\" "
                              f"or use a checkpoint trained on {backbone}")
    expected = feature_settings(ckpt["backbone"])
    if ckpt["features"] != expected:
        diff = {k: (v, expected.get(k)) for k, v in ckpt["features"].items() if expected.get(k) != v}
        raise CheckpointError(f"{path}: made with other feature settings (checkpoint, this code): {diff}; "
                              f"retrain it with this version")
    members = [build_model(ckpt["backbone"], ckpt["class_names"], pretrained=False)
               for _ in range(ckpt.get("members") or 1)]
    model = Ensemble(members) if ckpt.get("members") else members[0]
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in ckpt["state_dict"].items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {ckpt['backbone']}: {exc}") from exc
    model.trained = True
    return model


def load_with_metrics(path: str | Path) -> tuple[SoundClassifier | Ensemble, dict]:
    """A trained classifier (on the CPU) and the metrics its checkpoint records, from one read of the file."""
    ckpt = read_checkpoint(path)
    return _model_from(ckpt, Path(path)).eval(), ckpt.get("metrics", {})


def ensemble_of(paths: list[str | Path]) -> tuple[Ensemble, dict]:
    """The ensemble of trained checkpoints (ensembles among them contribute their members), and its metrics:
    the folds any member trained on, and the folds held out from all of them (none, if each held out another)."""
    members, train_folds, held_out, parts = [], set(), set(), []
    for path in paths:
        model, metrics = load_with_metrics(path)
        members += list(model.members) if isinstance(model, Ensemble) else [model]
        train_folds |= set(metrics.get("train_folds", []))
        if isinstance(metrics.get("test_folds"), list):
            held_out |= set(metrics["test_folds"])
        parts.append(dict(checkpoint=str(path), **metrics))
    try:
        ensemble = Ensemble(members)
    except CheckpointError as exc:
        raise CheckpointError(f"{', '.join(map(str, paths))}: {exc}") from None
    return ensemble, dict(train_folds=sorted(train_folds), test_folds=sorted(held_out - train_folds),
                          members=parts)
