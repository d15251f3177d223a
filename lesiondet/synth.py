"""Deterministic synthetic fundus photographs with exact VOC boxes.

Enough like a fundus photograph to exercise the pipeline (a circular field of
view on black, vessels, an optic disc, a darker fovea) with three lesion kinds:
small dark-red dots (MA), larger red blotches (HE) and yellow patches (EX),
plus the optic disc (OD) so graders can place the fovea.
Each lesion is drawn on its own mask, so its box is its exact pixel extent.
Same seed, same image, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lesiondet.io.voc import VocObject, VocRecord, write_voc


@dataclass(frozen=True)
class SynthSpec:
    size: int = 512
    n_ma: int = 6
    n_he: int = 3
    n_ex: int = 4
    disc_on_left: bool = True


def _field_of_view(size: int) -> tuple[np.ndarray, tuple[int, int], int]:
    c = (size // 2, size // 2)
    r = int(size * 0.47)
    yy, xx = np.mgrid[:size, :size]
    mask = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= r * r
    return mask, c, r


def _random_point_in_fov(rng: np.random.Generator, c: tuple[int, int], r: int, margin: float = 0.85) -> tuple[int, int]:
    rho = r * margin * np.sqrt(rng.uniform())
    phi = rng.uniform(0, 2 * np.pi)
    return int(c[0] + rho * np.cos(phi)), int(c[1] + rho * np.sin(phi))


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def make_fundus(seed: int, spec: SynthSpec = SynthSpec()) -> tuple[np.ndarray, list[VocObject]]:
    """One RGB uint8 image and its lesion boxes (0-based, continuous)."""
    rng = np.random.default_rng(seed)
    s = spec.size
    fov, c, r = _field_of_view(s)
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    dist = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / r
    base = np.array([rng.uniform(150, 190), rng.uniform(60, 85), rng.uniform(25, 40)], np.float32)
    img = base[None, None, :] * (1.0 - 0.35 * dist[..., None] ** 2)
    img += rng.normal(0, 3, img.shape).astype(np.float32)

    # Optic disc and fovea on the horizontal midline, fovea 2.5 disc diameters temporal.
    disc_r = int(s * 0.055)
    dx = int(r * 0.55)
    disc = (c[0] - dx, c[1] + int(rng.integers(-10, 10))) if spec.disc_on_left else (c[0] + dx, c[1])
    fovea_x = disc[0] + (1 if spec.disc_on_left else -1) * int(2.5 * 2 * disc_r)
    fovea = (int(np.clip(fovea_x, c[0] - r // 2, c[0] + r // 2)), disc[1])
    fov_dist = np.sqrt((xx - fovea[0]) ** 2 + (yy - fovea[1]) ** 2)
    img *= (1.0 - 0.25 * np.exp(-(fov_dist / (disc_r * 1.5)) ** 2))[..., None]

    # Vessels: dark curves leaving the disc up and down.
    vessels = np.zeros((s, s), np.uint8)
    for sign in (-1, 1):
        for k in range(3):
            pts = [disc]
            ang = sign * (0.4 + 0.5 * k) + (0 if spec.disc_on_left else np.pi)
            x, y = disc
            for _ in range(12):
                ang += rng.normal(0, 0.15)
                x += int(np.cos(ang) * s * 0.04)
                y += int(np.sin(ang) * s * 0.04)
                pts.append((x, y))
            cv2.polylines(vessels, [np.array(pts, np.int32)], False, 255, thickness=int(rng.integers(2, 5)), lineType=cv2.LINE_AA)
    v = vessels.astype(np.float32)[..., None] / 255.0
    img = img * (1 - 0.45 * v) + np.array([110, 20, 20], np.float32) * 0.45 * v

    disc_mask = np.zeros((s, s), np.float32)
    cv2.circle(disc_mask, disc, disc_r, 1.0, -1, cv2.LINE_AA)
    disc_mask = cv2.GaussianBlur(disc_mask, (0, 0), 2)[..., None]
    img = img * (1 - disc_mask) + np.array([245, 215, 150], np.float32) * disc_mask

    ys, xs = np.nonzero(disc_mask[..., 0] > 0.5)
    objects: list[VocObject] = [VocObject("OD", (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))]

    def place(n: int, label: str, radius: tuple[float, float], colour: tuple[float, float, float], blobs: int) -> None:
        nonlocal img
        for _ in range(n):
            for _attempt in range(20):
                p = _random_point_in_fov(rng, c, r)
                if np.hypot(p[0] - disc[0], p[1] - disc[1]) > disc_r * 2:
                    break
            m = np.zeros((s, s), np.uint8)
            rad = rng.uniform(*radius)
            for _b in range(blobs):  # irregular outline: a few overlapping ellipses
                off = rng.normal(0, rad * 0.35, 2) if blobs > 1 else (0, 0)
                axes = (max(1, int(rad * rng.uniform(0.7, 1.1))), max(1, int(rad * rng.uniform(0.7, 1.1))))
                cv2.ellipse(m, (int(p[0] + off[0]), int(p[1] + off[1])), axes, rng.uniform(0, 180), 0, 360, 255, -1)
            m &= fov.astype(np.uint8) * 255
            box = _box_of(m)
            if box is None:
                continue
            soft = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), 0.6)[..., None]
            img = img * (1 - 0.85 * soft) + np.array(colour, np.float32) * 0.85 * soft
            objects.append(VocObject(label, box))

    place(spec.n_he, "HE", (6, 14), (95, 12, 10), 3)
    place(spec.n_ex, "EX", (3, 8), (240, 220, 95), 2)
    place(spec.n_ma, "MA", (2, 3.5), (85, 8, 8), 1)
    img[~fov] = 0
    return np.clip(img, 0, 255).astype(np.uint8), objects


def write_sample(out_dir: str | Path, n_train: int = 24, n_val: int = 6, n_test: int = 6,
                 size: int = 512, seed: int = 0) -> Path:
    """Write ``train/``, ``val/`` and ``test/`` in labelImg VOC layout (Annotations + JPEGImages).

    Every sixth image is a negative (no lesions); the disc alternates sides.
    """
    out = Path(out_dir)
    index = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):
            negative = index % 6 == 5
            rng = np.random.default_rng(seed * 100003 + index)
            spec = SynthSpec(size=size,
                             n_ma=0 if negative else int(rng.integers(3, 9)),
                             n_he=0 if negative else int(rng.integers(1, 5)),
                             n_ex=0 if negative else int(rng.integers(1, 6)),
                             disc_on_left=index % 2 == 0)
            img, objects = make_fundus(seed * 100003 + index, spec)
            stem = f"synth_{index:04d}"
            img_path = out / split / "JPEGImages" / f"{stem}.jpg"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            assert ok
            from lesiondet.fileio import write_bytes

            write_bytes(img_path, buf.tobytes())
            rec = VocRecord(img_path, size, size, tuple(objects))
            write_voc(rec, out / split / "Annotations" / f"{stem}.xml")
            index += 1
    return out


# --------------------------------------------------------------------------- OCT B-scans
def make_oct(kind: str, rng: np.random.Generator, width: int = 256, height: int = 192) -> np.ndarray:
    """A greyscale OCT-like B-scan (uint8) with the sign of ``kind``.

    Layered bright bands over a dark vitreous, with a foveal dip and speckle.
    DME: dark fluid pockets inside the retina. DRUSEN: bumps lifting the bright
    RPE band. CNV: a thick bright lesion under the retina that lifts it.
    NORMAL: layers only.
    """
    x = np.arange(width)
    base = height * 0.35 + rng.uniform(-8, 8) + 10 * np.sin(x / width * np.pi * rng.uniform(0.5, 1.5))
    dip = 14 * np.exp(-((x - width * rng.uniform(0.4, 0.6)) / (width * 0.08)) ** 2)
    top = base + dip
    thickness = height * 0.3
    img = np.zeros((height, width), np.float32)
    ys = np.arange(height)[:, None]
    rpe = top + thickness
    if kind == "DRUSEN":
        for _ in range(rng.integers(3, 6)):
            cx, w_, h_ = rng.uniform(0.15, 0.85) * width, rng.uniform(6, 14), rng.uniform(5, 10)
            rpe = rpe - h_ * np.exp(-((x - cx) / w_) ** 2)
    if kind == "CNV":
        cx, w_ = rng.uniform(0.3, 0.7) * width, rng.uniform(18, 30)
        lift = rng.uniform(14, 24) * np.exp(-((x - cx) / w_) ** 2)
        top, rpe = top - lift, rpe - lift
    # layers: nerve fibre (bright), plexiform bands, dark nuclear layers, RPE (brightest)
    rel = (ys - top[None, :]) / thickness
    img += 150 * ((rel >= 0) & (rel < 0.12))
    img += 90 * ((rel >= 0.3) & (rel < 0.4))
    img += 70 * ((rel >= 0.55) & (rel < 0.62))
    img += 210 * ((ys >= rpe[None, :] - 4) & (ys < rpe[None, :] + 5))
    img += 60 * ((ys >= rpe[None, :] + 5) & (ys < rpe[None, :] + 30))
    if kind == "CNV":
        cx = int(np.argmin(rpe))  # the top of the lift
        cy = int(rpe[cx] + 10)
        cv2.ellipse(img, (cx, cy), (int(rng.uniform(14, 22)), int(rng.uniform(7, 11))), 0, 0, 360, 190, -1)
    if kind == "DME":
        for _ in range(rng.integers(2, 5)):
            cx = int(rng.uniform(0.25, 0.75) * width)
            cy = int(top[cx] + rng.uniform(0.3, 0.7) * thickness)
            cv2.ellipse(img, (cx, cy), (int(rng.uniform(6, 14)), int(rng.uniform(4, 9))), 0, 0, 360, 5, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    img *= rng.gamma(4.0, 0.25, img.shape).astype(np.float32)  # multiplicative speckle
    img += rng.normal(8, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_oct_sample(out_dir: str | Path, per_class: int = 8, patients: int = 4, seed: int = 0,
                     width: int = 256, height: int = 192) -> Path:
    """Class-per-folder synthetic OCT set with Kermany names ``CLASS-PATIENT-N.jpeg``."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for k, kind in enumerate(("CNV", "DME", "DRUSEN", "NORMAL")):
        (out / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            patient = 1000 * (k + 1) + i % patients
            img = make_oct(kind, rng, width, height)
            cv2.imwrite(str(out / kind / f"{kind}-{patient}-{i // patients + 1}.jpeg"), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out
