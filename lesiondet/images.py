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
    """Diameter of the field of view in ``img``'s pixels: the longer side of its mask's bounding box.

    Cameras crop the illuminated disc top and bottom (or, rarer, left and right), so the longer
    extent is the diameter. Read on a ``max_side`` copy: a few pixels of error at 256 px are well
    under 1% of the diameter. A photograph without a dark border counts as all field of view.
    """
    small, s = shrink(img, max_side)
    mask = fov_mask(small)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return float(max(img.shape[:2]))
    return float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)) / s


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
