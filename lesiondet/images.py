"""Reading images: one place that turns any file into RGB uint8 or a clear error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lesiondet.errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

#: Decompression-bomb guard off: 8000x8000 fundus mosaics are legitimate.
Image.MAX_IMAGE_PIXELS = None


def read_rgb(path: str | Path, allow_16bit: bool = False) -> np.ndarray:
    """Decode ``path`` to an ``H×W×3`` uint8 RGB array.

    Greyscale is replicated to three channels, alpha is dropped, CMYK and palette
    images are converted. 16-bit images are refused unless ``allow_16bit`` (then
    scaled to 8 bits), because silently rescaling a fundus photograph changes
    what the detector sees. Truncated or corrupt files raise ``ImageError``.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(path, "image not found", "check the path")
    if path.stat().st_size == 0:
        raise ImageError(path, "image file is empty (0 bytes)", "replace it with the original image")
    try:
        with Image.open(path) as im:
            im.load()  # forces a full decode so truncated files fail here
            mode = im.mode
            if mode in ("RGB", "RGBA") and _bits_per_sample(path, im) > 8:
                # Pillow silently keeps only the high byte of 48/64-bit colour; refuse or decode it properly.
                if not allow_16bit:
                    raise ImageError(path, "16-bit colour image is not supported",
                                     "convert it to 8-bit RGB (e.g. PNG/JPEG) first")
                return _read_16bit_colour(path)
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                if not allow_16bit:
                    raise ImageError(path, f"{mode} image (16-bit) is not supported",
                                     "convert it to 8-bit RGB (e.g. PNG/JPEG) first")
                return np.repeat(_to_8bit(np.asarray(im, dtype=np.float32))[..., None], 3, axis=2)
            if mode == "RGB":
                return np.asarray(im).copy()
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                return np.asarray(im.convert("RGBA").convert("RGB")).copy()
            if mode == "F":
                raise ImageError(path, "floating-point image is not supported", "convert it to 8-bit RGB first")
            return np.asarray(im.convert("RGB")).copy()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        why = "not a readable image" if isinstance(e, UnidentifiedImageError) else "truncated or corrupt"
        raise ImageError(path, f"{why} ({str(e)[:80]})", "replace it with a valid JPEG or PNG") from None


def _bits_per_sample(path: Path, im: Image.Image) -> int:
    """Bits per channel as stored in the file (PNG IHDR, TIFF BitsPerSample); 8 when unknown."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(25)
        return head[24] if len(head) == 25 else 8
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def _read_16bit_colour(path: Path) -> np.ndarray:
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3:
        raise ImageError(path, "cannot decode the 16-bit colour image", "convert it to 8-bit RGB first")
    return _to_8bit(cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB).astype(np.float32))


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    """16-bit samples to uint8: scaled from the full 16-bit range when values exceed 255, else kept."""
    return (arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0).clip(0, 255).astype(np.uint8)


def list_images(folder: str | Path) -> list[Path]:
    """The image files in ``folder``, sorted; a folder without any is an error naming it."""
    from lesiondet.errors import LesiondetError
    from lesiondet.fileio import list_dir

    found = [p for p in list_dir(folder) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise LesiondetError(folder, "no images (.jpg, .png, .tif, .bmp) in this folder", "point at image files")
    return found


def fov_mask(img: np.ndarray, threshold: int = 20) -> np.ndarray:
    """Boolean mask of the illuminated field of view (the bright disc on black).

    Thresholds the blurred red channel, which stays bright across the retina,
    and keeps the largest connected region.
    """
    import cv2

    red = cv2.GaussianBlur(img[..., 0], (0, 0), max(1.0, img.shape[1] / 500))
    mask = (red > threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return np.ones(img.shape[:2], bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def shrink(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``img`` area-averaged down so its longer side is at most ``max_side``, and the scale used (<= 1)."""
    import cv2

    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1:
        return img, 1.0
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


def fov_diameter(img: np.ndarray, max_side: int = 256) -> float:
    """Diameter of the field of view in ``img``'s pixels (``fov_circle``'s)."""
    return fov_circle(img, max_side)[2]


def fov_circle(img: np.ndarray, max_side: int = 256) -> tuple[float, float, float]:
    """Centre ``(x, y)`` and diameter of the field of view in ``img``'s pixels.

    Cameras crop the illuminated disc top and bottom (or, rarer, left and right), so the longer
    extent of the mask is the diameter. A photograph cropped on both axes (a square cut from a
    wider one, a telemedicine thumbnail) has no full extent left: there the circle through the
    visible rim (least squares on the mask's edge away from the frame) gives the diameter, so the
    same eye is read at the same scale however it was cropped. Read on a ``max_side`` copy: a few
    pixels of error at 256 px are well under 1% of the diameter. A photograph without a dark border
    counts as all field of view.
    """
    small, s = shrink(img, max_side)
    mask = fov_mask(small)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        h, w = img.shape[:2]
        return w / 2, h / 2, float(max(h, w))
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    extent = float(max(x1 - x0, y1 - y0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # The fit only replaces the extent when the mask is clipped on both axes and the rim says the
    # disc is wider: a whole or top-and-bottom-cropped disc keeps the plain extent (no fitting noise),
    # and is not fitted at all (this runs for every photograph the detector reads).
    h, w = mask.shape
    if (y0 <= 1 or y1 >= h - 1) and (x0 <= 1 or x1 >= w - 1):
        fit = _rim_circle(mask)
        if fit is not None and extent * 1.03 < fit[2] <= extent * MAX_RIM_FIT:
            cx, cy, extent = fit
    return cx / s, cy / s, extent / s


#: the widest disc the rim fit may report, as a multiple of the mask's longer extent (a square crop of a
#: 4:3 photograph's disc is about 1.2; beyond 1.6 only the corners would be field of view)
MAX_RIM_FIT = 1.6


def _rim_circle(mask: np.ndarray) -> tuple[float, float, float] | None:
    """Least-squares circle (Kasa) through the mask's edge pixels that are not on the frame; None when
    too little rim is visible or it is not round."""
    import cv2

    m = mask.astype(np.uint8)
    edge = m & ~cv2.erode(m, np.ones((3, 3), np.uint8))
    edge[:2], edge[-2:], edge[:, :2], edge[:, -2:] = 0, 0, 0, 0
    ys, xs = np.nonzero(edge)
    if len(xs) < 30:
        return None
    x, y = xs.astype(np.float64), ys.astype(np.float64)
    A = np.column_stack([x, y, np.ones_like(x)])
    (a, b, c), *_ = np.linalg.lstsq(A, x * x + y * y, rcond=None)
    cx, cy = a / 2, b / 2
    r2 = c + cx * cx + cy * cy
    if r2 <= 0:
        return None
    r = float(np.sqrt(r2))
    resid = np.abs(np.hypot(x - cx, y - cy) - r)
    if np.median(resid) > 0.02 * r:  # not a circle (a frame edge, a notch): keep the extent
        return None
    return float(cx), float(cy), 2 * r


def read_thumbnail(path: str | Path, max_side: int = 256) -> tuple[np.ndarray, float]:
    """A small RGB copy of an image file and its scale (thumbnail px per image px), decoded cheaply.

    JPEGs are decoded at a reduced DCT scale (PIL ``draft``): a 12-megapixel photograph's field of
    view is measured in milliseconds instead of a full decode.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            w = im.size[0]
            im.draft("RGB", (max_side, max_side))
            im.thumbnail((max_side, max_side))
            small = np.asarray(im.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"not a readable image ({str(e)[:80]})", "replace it with a valid JPEG or PNG") from None
    return small, small.shape[1] / w
