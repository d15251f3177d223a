"""OCT fluid segmentation: data pairing, subject splits, Dice, fluid figures and flags."""
import cv2
import numpy as np
import pytest

from lesiondet.errors import LesiondetError
from lesiondet.oct.segment import (
    FluidScan,
    check_disjoint,
    dice_of,
    fluid_flag,
    fluid_summary,
    overlap_counts,
    read_fluid_data,
    read_pair,
    segmentation_metrics,
    subject_of,
    subject_split,
)


def scan_folder(root, n=3, mask_size=(64, 48), mask_dtype=np.uint8):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"subject0{i % 2 + 1}_bscan0{i}.png"), np.full((48, 64), 90, np.uint8))
        m = np.zeros(mask_size[::-1], mask_dtype)
        m[10:20, 10:30] = 255 if mask_dtype == np.uint8 else 65535
        cv2.imwrite(str(root / "masks" / f"subject0{i % 2 + 1}_bscan0{i}.png"), m)
    return root


def test_subject_comes_from_duke_style_names():
    assert subject_of("subject03_bscan10.png") == "subject03"
    assert subject_of("eyeA-12.png") == "eyeA"


def test_a_folder_pairs_scans_and_masks_by_name(tmp_path):
    scans = read_fluid_data(scan_folder(tmp_path / "d"))
    assert [s.subject for s in scans] == ["subject01", "subject01", "subject02"]
    img, mask = read_pair(scans[0])
    assert img.shape == (48, 64, 3) and mask.dtype == bool and mask.sum() == 200


def test_a_csv_gives_image_mask_and_subject_relative_to_itself(tmp_path):
    scan_folder(tmp_path)
    (tmp_path / "s.csv").write_text("image,mask,subject\nimages/subject01_bscan00.png,masks/subject01_bscan00.png,7\n")
    (s,) = read_fluid_data(tmp_path / "s.csv")
    assert s.subject == "7" and s.image == tmp_path / "images" / "subject01_bscan00.png"


@pytest.mark.parametrize("spoil, words", [
    (lambda d: (d / "masks" / "subject01_bscan00.png").unlink(), "no mask with this name"),
    (lambda d: (d / "images" / "subject01_bscan00.png").unlink(), "mask without a scan"),
    (lambda d: [p.unlink() for p in (d / "images").iterdir()], "no images"),
])
def test_a_missing_pair_or_an_empty_folder_is_one_error_naming_the_file(tmp_path, spoil, words):
    d = scan_folder(tmp_path / "d")
    spoil(d)
    with pytest.raises(LesiondetError, match=words):
        read_fluid_data(d)


def test_a_mask_of_another_size_or_depth_is_refused(tmp_path):
    (s, *_) = read_fluid_data(scan_folder(tmp_path / "a", mask_size=(32, 48)))
    with pytest.raises(LesiondetError, match="mask is 32x48 but its scan"):
        read_pair(s)
    (s, *_) = read_fluid_data(scan_folder(tmp_path / "b", mask_dtype=np.uint16))
    with pytest.raises(LesiondetError, match="16-bit"):
        read_pair(s)


def test_subjects_never_straddle_the_split():
    scans = [FluidScan(f"s{i}_{j}.png", None, f"s{i}") for i in range(8) for j in range(11)]
    train, val = subject_split(scans, 0.2, 0)
    assert not {s.subject for s in train} & {s.subject for s in val} and len({s.subject for s in val}) == 2
    with pytest.raises(LesiondetError, match="both training and validation"):
        check_disjoint(train, val + train[:1], "val.csv")


def test_dice_counts_two_empty_masks_as_agreement_and_pools_pixels():
    empty = np.zeros((4, 4), bool)
    assert dice_of(*overlap_counts(empty, empty)[:3]) == 1.0
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    tp, fp, fn, tn = overlap_counts(a, b)
    assert (tp, fp, fn, tn) == (4, 4, 4, 4) and dice_of(tp, fp, fn) == 0.5
    rows = [{"image": "x", "dice": 0.5, "fluid_px_true": 8, "fluid_px_pred": 8},
            {"image": "y", "dice": 1.0, "fluid_px_true": 0, "fluid_px_pred": 0}]
    m = segmentation_metrics(rows, np.array([4, 4, 4, 20]))
    assert m["dice"] == 0.5 and m["dice_per_scan_mean"] == 0.75 and m["both_empty"] == ["y"] and m["n"] == 2


def test_fluid_summary_and_the_flags_a_reader_needs():
    m = np.zeros((100, 200), bool)
    m[10:20, 10:20] = m[50:60, 100:130] = True
    s = fluid_summary(m)
    assert s["fluid_px"] == 400 and s["regions"] == 2 and s["fluid_fraction"] == 0.02
    assert fluid_flag("NORMAL", s) and not fluid_flag("DME", s)
    assert "no fluid" in fluid_flag("DME", fluid_summary(np.zeros((100, 200), bool)))


def test_fluid_area_in_mm2_is_pixels_times_the_pixel_spacing():
    mask = np.zeros((496, 768), bool)
    mask[100:130, 200:300] = True  # 30 rows x 100 columns = 3,000 px
    # by hand: 3,000 px x 11.3 µm x 3.9 µm = 132,210 µm² = 0.13221 mm²
    s = fluid_summary(mask, (11.3, 3.9))
    assert s["fluid_px"] == 3000 and s["fluid_mm2"] == pytest.approx(0.13221)
    assert "fluid_mm2" not in fluid_summary(mask)


def test_eval_with_spacing_reports_each_scans_absolute_area_error_in_mm2():
    # two scans: reference 3,000 and 0 px; prediction 2,000 and 500 px; at 10 x 5 µm a pixel is 5e-5 mm²
    rows = [{"image": "a", "dice": 0.8, "fluid_px_true": 3000, "fluid_px_pred": 2000},
            {"image": "b", "dice": 0.0, "fluid_px_true": 0, "fluid_px_pred": 500}]
    m = segmentation_metrics(rows, np.array([2000, 500, 1000, 10000]), spacing=(10.0, 5.0))
    assert [r["area_abs_error_mm2"] for r in m["per_scan"]] == pytest.approx([0.05, 0.025])
    assert m["per_scan"][0]["fluid_mm2_true"] == pytest.approx(0.15)
    assert m["area_abs_error_mm2_mean"] == pytest.approx(0.0375)
    assert "area_abs_error_mm2_mean" not in segmentation_metrics(rows, np.array([2000, 500, 1000, 10000]))


def test_clean_mask_cuts_keeps_the_retina_and_drops_specks_smaller_than_the_limit():
    from lesiondet.oct.segment import clean_mask

    prob = np.zeros((40, 60), np.float32)
    prob[5:15, 5:15] = 0.9      # a region of 100 px
    prob[30:32, 40:42] = 0.9    # a speck of 4 px
    prob[20:25, 20:30] = 0.45   # below the cut
    assert clean_mask(prob, 0.5).sum() == 104
    assert clean_mask(prob, 0.4).sum() == 154
    assert clean_mask(prob, 0.5, min_region_px=5).sum() == 100  # the speck goes, the region stays
    retina = np.zeros_like(prob, bool)
    retina[:, 30:] = True
    assert clean_mask(prob, 0.5, retina=retina).sum() == 4  # only what lies inside the band


def test_the_retina_band_spans_the_bright_layers_and_leaves_vitreous_and_deep_choroid_out():
    from lesiondet.oct.segment import retina_band

    img = np.full((200, 80), 20, np.uint8)
    img[:20] = 255              # white export padding: not retina
    img[60:66] = 200            # nerve fibre layer
    img[66:110] = 70            # inner retina, with a dark fluid pocket
    img[80:90, 30:50] = 15
    img[110:116] = 230          # RPE
    band = retina_band(np.dstack([img] * 3), margin_px=5)
    assert band[85, 40] and band[62, 10] and band[113, 70]   # fluid, NFL and RPE inside
    assert not band[10, 10] and not band[40, 10]             # padding and vitreous outside
    assert not band[150, 10]                                 # deep choroid outside


def test_an_unknown_loss_or_augmentation_is_one_error_naming_the_choices():
    from lesiondet.oct.segment import segment_loss, transforms

    with pytest.raises(LesiondetError, match="dice_bce"):
        segment_loss("lovasz")
    with pytest.raises(LesiondetError, match="strong"):
        transforms(64, 32, True, "wild")


@pytest.mark.parametrize("loss", ["dice_bce", "dice_focal"])
def test_both_losses_fall_when_the_prediction_moves_towards_the_mask(loss):
    import torch

    from lesiondet.oct.segment import segment_loss

    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:10, 4:10] = 1
    fn = segment_loss(loss)
    far, near = torch.zeros_like(target), (target * 2 - 1) * 3
    assert float(fn(near, target)) < float(fn(far, target))


def test_strong_augmentation_keeps_scan_and_mask_aligned_and_sized():
    from lesiondet.oct.segment import transforms

    img = np.zeros((48, 64, 3), np.uint8)
    img[10:30, 20:40] = 200
    mask = (img[..., 0] > 0).astype(np.uint8)
    tf = transforms(64, 48, True, "strong")
    for seed in range(5):
        import random

        random.seed(seed)
        np.random.seed(seed)
        t = tf(image=img, mask=mask)
        assert t["image"].shape == (48, 64, 3) and t["mask"].shape == (48, 64)
        inside = t["mask"] > 0
        assert inside.any()  # the bright block moved, and its mask with it
        assert t["image"][inside].mean() > t["image"][~inside].mean() + 1


def test_crop_training_sees_full_detail_windows_and_validation_sees_the_whole_scan():
    from lesiondet.oct.segment import transforms

    img = np.zeros((96, 128, 3), np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    train = transforms(128, 96, True, crop=(64, 32))
    val = transforms(128, 96, False, crop=(64, 32))
    t = train(image=img, mask=mask)
    assert t["image"].shape == (32, 64, 3) and t["mask"].shape == (32, 64)
    assert val(image=img, mask=mask)["image"].shape == (96, 128, 3)


def test_a_crop_keeps_the_pixels_at_full_detail():
    """One-pixel stripes survive a window of the resized scan; they would blur away in a 2x downscale."""
    from lesiondet.oct.segment import transforms

    img = np.zeros((96, 128, 3), np.uint8)
    img[::2] = 255
    window = transforms(128, 96, True, augment="standard", crop=(64, 32))
    small = transforms(64, 48, False)(image=img)["image"][..., 0]
    assert small.std() < 0.5  # the downscale averages the stripes to one grey
    rows = [window(image=img, mask=np.zeros((96, 128), np.uint8))["image"][..., 0] for _ in range(8)]
    assert max(np.abs(np.diff(r[:, 32])).max() for r in rows) > 2  # a window keeps them


def test_a_crop_as_large_as_the_input_or_larger_trains_on_the_whole_scan():
    from lesiondet.oct.segment import transforms

    img, mask = np.zeros((96, 128, 3), np.uint8), np.zeros((96, 128), np.uint8)
    assert transforms(128, 96, True, crop=(512, 320))(image=img, mask=mask)["image"].shape == (96, 128, 3)
    assert transforms(128, 96, True, crop=(512, 64))(image=img, mask=mask)["image"].shape == (64, 128, 3)


@pytest.mark.parametrize("crop", [(64, 0), (48, 32), (-32, 32)])
def test_a_crop_the_unet_cannot_take_is_one_error(crop):
    from lesiondet.oct.segment import transforms

    with pytest.raises(LesiondetError, match="crop_width and crop_height"):
        transforms(128, 96, True, crop=crop)


def _fluid_checkpoint(path, config):
    from lesiondet.engine.checkpoint import save_checkpoint
    from lesiondet.oct.segment import SEG_FORMAT, build_unet

    save_checkpoint(path, {"format": SEG_FORMAT, "config": config, "threshold": 0.5,
                           "model": build_unet("none").state_dict()})
    return path


def test_the_checkpoint_carries_its_post_processing_and_older_ones_keep_theirs(tmp_path, monkeypatch):
    from lesiondet.oct.segment import FluidSegmenter

    new = FluidSegmenter(_fluid_checkpoint(tmp_path / "new.pt", {"width": 64, "height": 32, "threshold": 0.3,
                                                                  "min_region_px": 20, "tta_flip": False}), "cpu")
    assert new.threshold == 0.3 and new.cfg["min_region_px"] == 20 and not new.cfg["tta_flip"]
    old = FluidSegmenter(_fluid_checkpoint(tmp_path / "old.pt", {"width": 64, "height": 32}), "cpu")
    assert old.threshold == 0.5 and old.cfg["min_region_px"] == 0 and old.cfg["tta_flip"]
    # mask() applies them: a probability map with a big region and a speck
    prob = np.zeros((32, 64), np.float32)
    prob[5:15, 5:25], prob[25, 50] = 0.35, 0.35
    monkeypatch.setattr(new, "probability", lambda img: prob)
    monkeypatch.setattr(old, "probability", lambda img: prob)
    img = np.zeros((32, 64, 3), np.uint8)
    assert new.mask(img).sum() == 200 and old.mask(img).sum() == 0
