"""Make the README's two pictures with the shipped models: a drawn photograph and report.html in Chromium.

    python tools/readme_pictures.py [--photos IMG ...]      # -> docs/img/detect.jpg, docs/img/report.png

The photographs default to IDRiD validation photographs (CC BY 4.0), which the shipped detector did not
train on. The report is opened in headless Chromium (Debian's chromium and chromium-driver, as the
browser test uses) and its first screen saved.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDRID = ROOT.parent / "shared" / "data" / "fundus" / "idrid" / "JPEGImages"
IMG = ROOT / "docs" / "img"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", nargs="+", type=Path,
                    default=[IDRID / f"IDRiD_{n}.jpg" for n in ("49", "02", "17")])
    ap.add_argument("--width", type=int, default=1200, help="width of docs/img/detect.jpg")
    a = ap.parse_args()
    import cv2

    IMG.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "detect"
        subprocess.run([sys.executable, "-m", "lesiondet", "detect", *map(str, a.photos), "--grade", "--report",
                        "--out", str(out)], check=True)
        drawn = cv2.imread(str(out / f"{a.photos[0].stem}.png"))
        h, w = drawn.shape[:2]
        small = cv2.resize(drawn, (a.width, round(h * a.width / w)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(IMG / "detect.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 82])
        exe = next(e for e in ("chromium", "chromium-browser", "google-chrome") if shutil.which(e))
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1280,1000", f"--screenshot={IMG / 'report.png'}",
                        (out / "report.html").as_uri()], check=True, capture_output=True)
    print(f"wrote {IMG / 'detect.jpg'} and {IMG / 'report.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
