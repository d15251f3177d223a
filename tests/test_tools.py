"""Scripts under tools/ run on the embedded sample."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_crop_counts_lesions_found_in_the_window(tmp_path):
    test = ROOT / "annotations" / "test"
    xml = sorted((test / "Annotations").glob("*.xml"))[0]
    img = next((test / "JPEGImages").glob(xml.stem + ".*"))
    out = tmp_path / "crop.png"
    # ground truth against itself: every lesion in the window is found by exactly its own box
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "compare_crop.py"), str(img), "--pred", str(xml),
                        "--gt", str(xml), "--labels", str(ROOT / "configs/datasets/sample.yaml"),
                        "--out", str(out), "--window", "0,0,512,512"], capture_output=True, text=True, check=True)
    lines = [ln for ln in r.stdout.splitlines() if ": " in ln and "boxes" in ln]
    assert lines
    for ln in lines:
        n_boxes = int(ln.split(": ")[1].split()[0])
        found, total = (int(v) for v in ln.split("; ")[1].split()[0:3:2])
        assert found == total == n_boxes, ln
    assert out.stat().st_size > 1000
