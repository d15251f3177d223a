"""``build_detector``: a torchvision Faster R-CNN sized for retinal lesions.

Defaults differ from torchvision's COCO recipe where lesions need it: anchors
start at 8 px instead of 32, up to 1000 detections per image instead of 100
(an IDRiD image holds up to ~570 lesions), and more proposals survive NMS.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from lesiondet.config import check_section, defaults
from lesiondet.errors import CheckpointError, LesiondetError
from lesiondet.nn import backbones

DEFAULT_ARCH: dict[str, Any] = defaults("model")

BACKBONES = ("efficientnet_lite0", "mobilenet_v3_large", "resnet50")


def resolve_arch(arch: Mapping[str, Any] | None) -> dict[str, Any]:
    """``DEFAULT_ARCH`` updated with ``arch``; unknown keys are an error (typos hide bugs)."""
    out = check_section("model", arch)  # unknown keys (typos hide bugs) and values of the wrong kind
    if out["backbone"] not in BACKBONES:
        raise LesiondetError(None, f"unknown backbone '{out['backbone']}'", f"choose one of {', '.join(BACKBONES)}")
    if out["pretrained"] not in ("imagenet", "torchvision", "none"):
        raise LesiondetError(None, f"unknown pretrained='{out['pretrained']}'", "use imagenet, torchvision or none")
    return out


def _backbone(arch: Mapping[str, Any], load_pretrained: bool):
    name, pretrained = arch["backbone"], arch["pretrained"] if load_pretrained else "none"
    if name == "efficientnet_lite0":
        if pretrained == "torchvision":
            raise LesiondetError(None, "torchvision has no EfficientNet-Lite0 weights",
                                 "use --pretrained imagenet with this backbone")
        return backbones.lite0_fpn(pretrained == "imagenet", arch["stages"], arch["trainable_from"],
                                   arch["fpn_channels"])
    if pretrained == "imagenet":
        raise LesiondetError(None, f"offline ImageNet weights exist only for efficientnet_lite0, not {name}",
                             "use --pretrained torchvision (needs the hub cache) or none")
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, mobilenet_v3_large, resnet50
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
    from torchvision.ops import misc

    trainable = 3 if pretrained == "torchvision" else (6 if name == "mobilenet_v3_large" else 5)
    if name == "mobilenet_v3_large":
        weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if pretrained == "torchvision" else None
        if weights:
            backbones.require_cached(weights)
        net = mobilenet_v3_large(weights=weights, norm_layer=misc.FrozenBatchNorm2d if weights else None)
        return _mobilenet_extractor(net, True, trainable)
    weights = ResNet50_Weights.IMAGENET1K_V1 if pretrained == "torchvision" else None
    if weights:
        backbones.require_cached(weights)
    net = resnet50(weights=weights, norm_layer=misc.FrozenBatchNorm2d)
    return _resnet_fpn_extractor(net, trainable)


def _levels(backbone: torch.nn.Module) -> int:
    with torch.no_grad():
        was = backbone.training
        backbone.eval()
        n = len(backbone(torch.zeros(1, 3, 64, 64)))
        backbone.train(was)
    return n


class ModelScaleTransform(GeneralizedRCNNTransform):
    """torchvision's normalise-and-batch step without its resize: inputs arrive at model scale.

    Inference scales tiles and whole images itself (``predict.to_model_scale``, the
    same interpolation torchvision uses), so the inference network, and what is
    exported of it, has no input-size switch.
    """

    def __init__(self) -> None:
        super().__init__(1, 1, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

    def resize(self, image: torch.Tensor, target: Optional[Dict[str, torch.Tensor]] = None
               ) -> Tuple[torch.Tensor, Optional[Dict[str, torch.Tensor]]]:
        return image, target


def partial_label_loss(class_logits: torch.Tensor, box_regression: torch.Tensor, labels: Sequence[torch.Tensor],
                       regression_targets: Sequence[torch.Tensor], members: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Torchvision's ``fastrcnn_loss`` where a target may be a set of classes (a partial label).

    ``members[t]`` marks the outputs target index ``t`` may be (``LabelMap.member_matrix``). The
    classification loss of a sample is ``-log sum(p_c for c in members[t])``: for a single class
    it is cross-entropy, and a merged ``HE_MA`` box is positive for HE + MA, so the model never
    has to pick one and neither member is penalised. The box loss is smooth L1 on each member's
    deltas, averaged over the members, and normalised as torchvision does (by all samples).
    """
    labels_t = torch.cat(list(labels))
    targets = torch.cat(list(regression_targets))
    allowed = members.to(labels_t.device)[labels_t]  # [N, 1 + classes]
    logp = class_logits.float().log_softmax(1)
    loss_cls = -logp.masked_fill(~allowed, float("-inf")).logsumexp(1).mean()
    pos = torch.where(labels_t > 0)[0]
    n, k = class_logits.shape
    deltas = box_regression.reshape(n, -1, 4)[pos].float()  # [P, 1 + classes, 4]
    weight = allowed[pos].float()
    weight[:, 0] = 0
    weight = weight / weight.sum(1, keepdim=True).clamp(min=1)
    per_class = F.smooth_l1_loss(deltas, targets[pos, None, :].float().expand(-1, k, 4), beta=1 / 9,
                                 reduction="none").sum(-1)
    loss_box = (per_class * weight).sum() / max(1, labels_t.numel())
    return loss_cls, loss_box


class MaskedRoIHeads(RoIHeads):
    """Torchvision's box head with two training-only changes to its loss (``partial_label_loss``).

    A target may carry ``class_mask`` (bool, background + classes): outputs it
    leaves out are removed from that image's softmax, so a class its source
    never annotates is neither rewarded nor punished there. A box may carry a
    partial label (an index past the classes, ``members`` says which classes it
    may be). Parameters and inference are exactly torchvision's; only training
    networks use it, and ``members`` is not part of the saved weights.
    """

    members: torch.Tensor | None = None

    @classmethod
    def like(cls, h: RoIHeads, members: torch.Tensor | None = None) -> "MaskedRoIHeads":
        """The same modules and settings as ``h``, through the constructor."""
        out = cls(h.box_roi_pool, h.box_head, h.box_predictor, h.proposal_matcher.high_threshold,
                  h.proposal_matcher.low_threshold, h.fg_bg_sampler.batch_size_per_image,
                  h.fg_bg_sampler.positive_fraction, h.box_coder.weights, h.score_thresh, h.nms_thresh,
                  h.detections_per_img)
        out.members = members
        return out

    def forward(self, features, proposals, image_shapes, targets=None):  # type: ignore[override]
        if not self.training or targets is None or not all("class_mask" in t for t in targets):
            return super().forward(features, proposals, image_shapes, targets)
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(feats)
        mask = torch.cat([t["class_mask"].to(class_logits.device).expand(len(p), -1)
                          for t, p in zip(targets, proposals)])
        class_logits = class_logits.masked_fill(~mask, -1e4)  # -1e4 is finite in float16 too
        members = self.members
        if members is None:  # every target is a class of its own
            members = torch.eye(class_logits.shape[1], dtype=torch.bool)
        loss_classifier, loss_box_reg = partial_label_loss(class_logits, box_regression, labels,
                                                           regression_targets, members)
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}


def build_detector(num_classes: int, arch: Mapping[str, Any] | None = None, load_pretrained: bool = True, *,
                   input_size: int | None = 512, score_thresh: float | None = None,
                   masked: bool = False, members: torch.Tensor | None = None) -> FasterRCNN:
    """Faster R-CNN with ``num_classes`` outputs (background included).

    Args:
        num_classes: classes of the label map + 1.
        arch: overrides of ``DEFAULT_ARCH`` (a config's ``model:`` section).
        load_pretrained: False when the weights come from a checkpoint anyway.
        input_size: side every input is scaled to (the tile); None: inputs arrive at model scale.
        score_thresh: lowest score returned (default ``arch["box_score_thresh"]``).
        masked: per-image class masks and partial labels in the loss (``MaskedRoIHeads``); inference needs none.
        members: with ``masked``, which outputs each target index may be (``LabelMap.member_matrix``).
    """
    arch = resolve_arch(arch)
    backbone = _backbone(arch, load_pretrained)
    levels = _levels(backbone)
    sizes = [tuple(int(s) for s in level) for level in arch["anchor_sizes"]]
    if len(sizes) != levels:
        raise LesiondetError(None, f"anchor_sizes has {len(sizes)} levels but the backbone gives {levels}",
                             "list one group of sizes per pyramid level in the config")
    if len({len(s) for s in sizes}) != 1:
        raise LesiondetError(None, "every anchor_sizes level needs the same number of sizes", "fix the config")
    ratios = (tuple(float(r) for r in arch["aspect_ratios"]),) * levels
    anchor_gen = AnchorGenerator(tuple(sizes), ratios)
    keys = [k for k in DEFAULT_ARCH if k.startswith(("rpn_", "box_"))]
    heads = {k: arch[k] for k in keys}
    if score_thresh is not None:
        heads["box_score_thresh"] = float(score_thresh)
    side = input_size or 1
    model = FasterRCNN(backbone, num_classes=num_classes, rpn_anchor_generator=anchor_gen, min_size=side,
                       max_size=side, **heads)
    if input_size is None:
        model.transform = ModelScaleTransform()
    if masked:
        model.roi_heads = MaskedRoIHeads.like(model.roi_heads, members)
    return model


CHECKPOINT_FORMAT = "lesiondet-detector/1"


def detector_from_checkpoint(ckpt: Mapping[str, Any], path: str = "", *, input_size: int | None = -1,
                             score_thresh: float | None = None) -> tuple[FasterRCNN, list[str]]:
    """Rebuild the detector a checkpoint describes and load its weights.

    ``input_size`` -1 (default) means the tile it was trained at; see ``build_detector`` for the rest.
    """
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, "not a lesiondet detector checkpoint",
                              "pass a best.pt or last.pt written by 'lesiondet train'")
    classes = list(ckpt["classes"])
    arch = {k: v for k, v in ckpt["arch"].items() if k not in ("min_size", "max_size")}  # the input size is derived
    if input_size == -1:
        input_size = int((ckpt.get("tiling") or {}).get("tile") or ckpt["arch"].get("min_size", 512))
    model = build_detector(len(classes) + 1, arch, load_pretrained=False, input_size=input_size,
                           score_thresh=score_thresh)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)[:200]
        raise CheckpointError(path, f"weights do not match the model they describe ({first})",
                              "retrain, or use the checkpoint with the lesiondet version that wrote it") from None
    return model, classes


def load_start(model: FasterRCNN, ckpt: Mapping[str, Any], classes: Sequence[str], path: str = "") -> str:
    """Start ``model`` (built for ``classes``) from a detector checkpoint's weights; returns what was kept.

    Everything but the box predictor is copied as it is. The predictor's rows (background, and four
    box deltas per class) are matched by class name: a class both know keeps its trained row, a new
    class keeps its fresh one, and a class the checkpoint knows but ``classes`` lacks is dropped.
    """
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, "not a lesiondet detector checkpoint",
                              "pass a best.pt written by 'lesiondet train'")
    old = ["__background__", *ckpt["classes"]]
    new = ["__background__", *classes]
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    own = model.state_dict()
    for key in [k for k in state if k.startswith("roi_heads.box_predictor.")]:
        src, dst = state.pop(key), own[key].clone()
        per = src.shape[0] // len(old)  # 1 row per class (scores) or 4 (box deltas)
        for j, c in enumerate(new):
            if c in old:
                i = old.index(c)
                dst[j * per:(j + 1) * per] = src[i * per:(i + 1) * per]
        state[key] = dst
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)[:200]
        raise CheckpointError(path, f"its network is not this run's model ({first})",
                              "train with the same model section (backbone, anchors) as that checkpoint") from None
    kept, fresh = [c for c in classes if c in old], [c for c in classes if c not in old]
    return f"classes kept from it: {', '.join(kept) or 'none'}; new: {', '.join(fresh) or 'none'}"
