"""Merging detections from overlapping passes over one image: class-wise NMS or weighted box fusion,
nested-box suppression and dropping boxes cut by a tile edge (SAHI's ``postprocess``)."""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.ops import batched_nms, box_iou


def weighted_box_fusion(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted box fusion (Solovyev et al. 2021), per class.

    Boxes are visited best first; each joins the cluster whose fused box it
    overlaps at IoU > ``iou`` or starts a new one. A fused box is the
    score-weighted mean of its members and its score their mean.
    """
    out_b, out_s, out_l = [], [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[scores[idx].argsort(descending=True)]
        members: list[list[int]] = []
        fused: list[torch.Tensor] = []
        for i in idx.tolist():
            if fused:
                ious = box_iou(boxes[i:i + 1], torch.stack(fused))[0]
                j = int(ious.argmax())
                if ious[j] > iou:
                    members[j].append(i)
                    w = scores[members[j]]
                    fused[j] = (boxes[members[j]] * w[:, None]).sum(0) / w.sum()
                    continue
            members.append([i])
            fused.append(boxes[i])
        for m, f in zip(members, fused):
            out_b.append(f)
            out_s.append(scores[m].mean())
            out_l.append(c)
    if not out_b:
        return boxes[:0], scores[:0], labels[:0]
    s = torch.stack(out_s)
    order = s.argsort(descending=True)
    return torch.stack(out_b)[order], s[order], torch.stack(out_l)[order]


def padded(boxes: torch.Tensor, pad: float) -> torch.Tensor:
    """Boxes grown by ``pad`` on every side, for matching only.

    IoU is blind to scale: two 5-px boxes of one microaneurysm or exudate, 2 px apart (one tile sees it a
    pixel off from its neighbour), have IoU under 0.5 and both survive NMS, and the one whose centre misses
    the lesion is a false positive. Grown by a few pixels they overlap as boxes of large lesions do, which
    a few pixels barely change.
    """
    return boxes + boxes.new_tensor([-pad, -pad, pad, pad]) if pad else boxes


def _inside_share(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[i, j]``: the share of box ``b[j]`` that lies inside box ``a[i]``."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    return inter / (b[:, 2:] - b[:, :2]).prod(1).clamp(min=1e-6)[None, :]


def suppress_nested(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, share: float) -> torch.Tensor:
    """Indices (best first) left after dropping boxes that lie inside a better box of their class.

    IoU-based NMS keeps a small box inside a large one (their IoU is small), so
    a cluster of exudates comes back as the cluster plus its parts, several
    times over. Like SAHI's IOS match metric this looks at the intersection
    over the smaller box, but only the box inside goes, and only when it scores
    lower: a small, confident box never removes the larger box around it (an
    optic disc seen whole in the downscaled pass stays when a tile finds a piece).
    """
    order = scores.argsort(descending=True)
    keep = []
    for c in labels[order].unique():
        idx = order[labels[order] == c]
        inside = _inside_share(boxes[idx], boxes[idx]) > share  # [i, j]: j lies inside i
        gone = torch.zeros(len(idx), dtype=torch.bool)
        for i in range(len(idx)):
            if not gone[i]:
                keep.append(idx[i])
                gone[i + 1:] |= inside[i, i + 1:]
    keep_t = torch.stack(keep) if keep else order[:0]
    return keep_t[scores[keep_t].argsort(descending=True)]


def merge_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, method: str = "nms",
                     iou: float = 0.5, max_det: int = 1000, nested_ios: float = 0.0, pad: float = 0.0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge detections from overlapping tiles and passes, class by class, best first; ``max_det`` per class.

    Boxes match at IoU > ``iou`` after growing by ``pad`` pixels (``padded``). ``nested_ios`` > 0 then
    drops boxes nested in a better one (``suppress_nested``).
    """
    if len(boxes) == 0:
        return boxes, scores, labels
    grown = padded(boxes, pad)
    if method == "wbf":
        # fused on the grown boxes; a fused box is a weighted mean of its members, so shrinking it is exact
        b, s, lab = weighted_box_fusion(grown, scores, labels, iou)
        b = padded(b, -pad)
    else:
        keep = batched_nms(grown, scores, labels, iou)
        b, s, lab = boxes[keep], scores[keep], labels[keep]
    # The cap is per class, as COCO's maxDets is: hundreds of exudates must not crowd out the microaneurysms.
    keep = torch.cat([(lab == c).nonzero().flatten()[:max_det] for c in lab.unique()]).sort().values
    b, s, lab = b[keep], s[keep], lab[keep]
    if nested_ios > 0:
        keep = suppress_nested(b, s, lab, nested_ios)
        b, s, lab = b[keep], s[keep], lab[keep]
    return b, s, lab


def drop_cut_boxes(boxes: torch.Tensor, window: Sequence[int], width: int, height: int, margin: float = 2.0
                   ) -> torch.Tensor:
    """Mask of boxes that do not touch a window edge lying inside the image.

    A box touching such an edge is a piece of an object cut by the tile; a
    neighbouring tile or the whole-image pass sees the object entire.
    """
    x0, y0, x1, y1 = window
    keep = torch.ones(len(boxes), dtype=torch.bool)
    if x0 > 0:
        keep &= boxes[:, 0] > margin
    if y0 > 0:
        keep &= boxes[:, 1] > margin
    if x1 < width:
        keep &= boxes[:, 2] < (x1 - x0) - margin
    if y1 < height:
        keep &= boxes[:, 3] < (y1 - y0) - margin
    return keep
