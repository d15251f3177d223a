"""Fuzzing the VOC reader with hypothesis: any bytes, and labelImg files mutated at random, either parse
into valid records or raise the documented ``VocError`` / ``ImageError``; never anything else."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lesiondet.errors import ImageError, VocError
from lesiondet.io.labels import default_label_map
from lesiondet.io.voc import parse_voc
from tests.conftest import write_image

LM = default_label_map()
FOLDER = Path(tempfile.mkdtemp(prefix="vocfuzz_"))
write_image(FOLDER / "img.jpg", (64, 48))
# LESIONDET_FUZZ_EXAMPLES=5000 for a deeper run than the suite's.
FUZZ = settings(max_examples=int(os.environ.get("LESIONDET_FUZZ_EXAMPLES", 250)), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes) -> None:
    """Parse ``data`` as an annotation file; it must be valid or fail in the documented way."""
    xml = FOLDER / "case.xml"
    xml.write_bytes(data)
    try:
        rec = parse_voc(xml, LM)
    except (VocError, ImageError) as e:
        assert str(e).startswith(str(xml)) or str(e).startswith(str(FOLDER)), str(e)
        assert "\n" not in str(e)
        return
    assert rec.width > 0 and rec.height > 0
    for o in rec.objects:
        x0, y0, x1, y1 = o.box
        assert all(math.isfinite(v) for v in o.box)
        assert 0 <= x0 < x1 <= rec.width and 0 <= y0 < y1 <= rec.height
        assert o.label in LM.classes
        assert o.score is None or math.isfinite(o.score)


numbers = st.one_of(
    st.integers(-100, 200).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "0x10", "12px", "1,5", "٣"]),
)
names = st.one_of(st.sampled_from(["MA", "HE", "EX", "SE", "OD", "microaneurysm", "Hard Exudate", "haemorrhage"]),
                  st.text(max_size=12))


@st.composite
def labelimg_xml(draw) -> str:
    """A labelImg-shaped file whose fields are drawn at random (valid and invalid values alike)."""
    objs = ""
    for _ in range(draw(st.integers(0, 4))):
        x0, y0, x1, y1 = (draw(numbers) for _ in range(4))
        extra = draw(st.sampled_from(["", "<difficult>1</difficult>", "<score>0.5</score>", "<score>abc</score>"]))
        objs += (f"<object><name>{draw(names)}</name>{extra}<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                 f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    w, h = draw(st.sampled_from([("64", "48"), ("0", "0"), ("", ""), ("-5", "48"), ("64.9", "48"), ("big", "1")]))
    filename = draw(st.sampled_from(["img.jpg", "missing.jpg", "", "../img.jpg"]))
    return (f"<annotation><folder>x</folder><filename>{filename}</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>")


@st.composite
def mutated(draw) -> bytes:
    """A labelImg file with a few random cuts, insertions and byte flips."""
    data = bytearray(draw(labelimg_xml()).encode("utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["cut", "insert", "flip", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "cut":
            del data[i:i + draw(st.integers(1, 20))]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"<", b">", b"</", b"&", b"&amp;", b"\x00", b"\xff\xfe", b"<object>",
                                              b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
                                              b"<bndbox>", b"]]>", b"\"'", b"<?xml version='1.0'?>"]))
        elif op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        else:
            del data[i:]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_never_escape_the_documented_errors(data):
    check(data)


@FUZZ
@given(labelimg_xml())
def test_random_field_values_never_escape_the_documented_errors(text):
    check(text.encode("utf-8"))


@FUZZ
@given(mutated())
def test_mutated_labelimg_files_never_escape_the_documented_errors(data):
    check(data)


def test_the_fuzzer_reaches_both_outcomes():
    """The strategies are not vacuous: some generated files parse, some are refused."""
    ok = bad = 0

    @settings(max_examples=150, deadline=None, database=None)
    @given(labelimg_xml())
    def run(text):
        nonlocal ok, bad
        try:
            (FOLDER / "probe.xml").write_text(text)
            parse_voc(FOLDER / "probe.xml", LM)
            ok += 1
        except (VocError, ImageError):
            bad += 1

    run()
    assert ok > 0 and bad > 0


@pytest.mark.parametrize("text", [
    "<annotation><filename>img.jpg</filename><size><width>64</width><height>48</height></size>"
    "<object><name>MA</name><bndbox>"
    "<xmin>nan</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>",
    "<annotation><filename>img.jpg</filename><size><width>1e400</width><height>48</height></size></annotation>",
])
def test_known_nasty_files_are_refused(text):
    (FOLDER / "nasty.xml").write_text(text)
    with pytest.raises(VocError):
        parse_voc(FOLDER / "nasty.xml", LM)
