"""Image decoding: every format turns into RGB uint8 or a one-line ImageError."""
import numpy as np
import pytest
from PIL import Image

from lesiondet.errors import ImageError
from lesiondet.images import read_rgb


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grey_rgba_and_palette_images_become_rgb(tmp_path, mode):
    p = tmp_path / "a.png"
    Image.new(mode, (20, 10)).save(p)
    assert read_rgb(p).shape == (10, 20, 3)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    p = tmp_path / "a.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(p)
    img = read_rgb(p)
    assert img.shape == (10, 20, 3) and img[0, 0, 0] > 200 and img[0, 0, 1] < 50


def test_16_bit_is_refused_unless_allowed(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(np.full((10, 20), 40000, np.uint16)).save(p)
    with pytest.raises(ImageError, match="16-bit"):
        read_rgb(p)
    assert read_rgb(p, allow_16bit=True)[0, 0, 0] == int(40000 / 65535 * 255)


def test_truncated_jpeg_is_an_error(tmp_path):
    p = tmp_path / "a.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(p, quality=95)
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        read_rgb(p)


@pytest.mark.parametrize("content,needle", [(b"", "empty"), (b"not an image", "not a readable image")])
def test_empty_and_garbage_files_are_errors(tmp_path, content, needle):
    p = tmp_path / "a.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=needle):
        read_rgb(p)
