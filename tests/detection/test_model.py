"""The detector builder and the offline ImageNet backbone."""
import pytest
import torch

from lesiondet.detection.model import build_detector
from lesiondet.errors import LesiondetError
from lesiondet.nn import backbones


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return build_detector(4, {"fpn_channels": 32}, load_pretrained=False, input_size=128, masked=True)


def test_detector_is_sized_for_lesions(detector):
    assert detector.roi_heads.detections_per_img >= 1000
    sizes = detector.rpn.anchor_generator.sizes
    assert min(min(s) for s in sizes) <= 8 and max(max(s) for s in sizes) >= 256
    assert detector.roi_heads.box_predictor.cls_score.out_features == 4


def test_detector_trains_on_a_negative_and_a_positive_image(detector):
    detector.train()
    targets = [{"boxes": torch.tensor([[10.0, 10, 14, 14]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = detector([torch.rand(3, 128, 128), torch.rand(3, 128, 128)], targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_backbone_batch_norm_is_frozen_and_early_blocks_too():
    bb = backbones.lite0_fpn(pretrained=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bb.modules())
    assert not any(p.requires_grad for p in bb.body.stem.parameters())
    assert not any(p.requires_grad for p in bb.body.blocks[2].parameters())
    assert all(p.requires_grad for p in bb.body.blocks[3].parameters())


def test_offline_imagenet_weights_load_and_classify_a_cat():
    import torch.nn.functional as F
    from skimage import data

    model = backbones.efficientnet_lite0(pretrained=True).eval()
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    img = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        top3 = model((img - mean[:, None, None]) / std[:, None, None]).topk(3).indices[0].tolist()
    assert any(281 <= k <= 285 for k in top3), top3


def test_uncached_torchvision_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(LesiondetError, match="not in the cache"):
        build_detector(3, {"backbone": "mobilenet_v3_large", "pretrained": "torchvision",
                           "anchor_sizes": [[16, 32], [64, 128], [256, 512]]})


def test_torchvision_backbone_is_selectable_without_weights():
    m = build_detector(3, {"backbone": "mobilenet_v3_large", "pretrained": "none",
                           "anchor_sizes": [[16, 32], [64, 128], [256, 512]]})
    assert m.roi_heads.detections_per_img == 1000


def test_unknown_model_option_is_an_error():
    with pytest.raises(LesiondetError, match="unknown model option"):
        build_detector(3, {"anchor_size": [[8]]})


def test_class_mask_keeps_an_unannotated_class_out_of_the_loss(detector):
    """An image from a source without OD labels must not push the OD output down."""
    torch.manual_seed(0)
    detector.train()
    cls = detector.roi_heads.box_predictor.cls_score
    image = [torch.rand(3, 128, 128)]

    def grad_rows(mask):
        detector.zero_grad()
        target = {"boxes": torch.tensor([[10.0, 10, 30, 30]]), "labels": torch.tensor([1])}
        if mask is not None:
            target["class_mask"] = torch.tensor(mask)
        torch.manual_seed(1)
        detector(image, [target])["loss_classifier"].backward()
        return cls.weight.grad.abs().sum(1)

    masked = grad_rows([True, True, True, False])  # class 3 not annotated by this image's source
    assert masked[3] == 0 and masked[1] > 0 and masked[0] > 0
    assert grad_rows(None)[3] > 0  # without a mask every class learns from every image


def test_a_run_started_from_a_checkpoint_keeps_each_known_class_row_by_name():
    from lesiondet.detection.model import CHECKPOINT_FORMAT, load_start

    arch = {"fpn_channels": 32}
    old = build_detector(4, arch, load_pretrained=False, input_size=128)  # classes MA, HE, EX
    ckpt = {"format": CHECKPOINT_FORMAT, "classes": ["MA", "HE", "EX"], "model": old.state_dict()}
    new = build_detector(4, arch, load_pretrained=False, input_size=128)  # classes EX, MA, NV: one new
    fresh = {k: v.clone() for k, v in new.roi_heads.box_predictor.state_dict().items()}
    said = load_start(new, ckpt, ["EX", "MA", "NV"])
    assert said == "classes kept from it: EX, MA; new: NV"
    o, n = old.roi_heads.box_predictor, new.roi_heads.box_predictor
    assert torch.equal(n.cls_score.weight[0], o.cls_score.weight[0])       # background
    assert torch.equal(n.cls_score.weight[1], o.cls_score.weight[3])       # EX
    assert torch.equal(n.cls_score.weight[2], o.cls_score.weight[1])       # MA
    assert torch.equal(n.cls_score.weight[3], fresh["cls_score.weight"][3])  # NV: its own fresh row
    assert torch.equal(n.bbox_pred.weight[4:8], o.bbox_pred.weight[12:16])  # EX's four box deltas
    assert torch.equal(new.backbone.fpn.layer_blocks[0][0].weight, old.backbone.fpn.layer_blocks[0][0].weight)


def test_a_start_checkpoint_of_another_network_is_a_one_line_error():
    from lesiondet.detection.model import CHECKPOINT_FORMAT, load_start
    from lesiondet.errors import CheckpointError

    other = build_detector(3, {"fpn_channels": 64}, load_pretrained=False, input_size=128)
    ckpt = {"format": CHECKPOINT_FORMAT, "classes": ["MA", "HE"], "model": other.state_dict()}
    with pytest.raises(CheckpointError, match="not this run's model"):
        load_start(build_detector(3, {"fpn_channels": 32}, load_pretrained=False, input_size=128), ckpt, ["MA", "HE"])
    with pytest.raises(CheckpointError, match="not a lesiondet detector"):
        load_start(other, {"format": "x"}, ["MA"])
