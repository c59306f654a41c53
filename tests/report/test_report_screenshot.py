"""Screenshots of the dashboard in headless Chromium: the first screen (1280 x 900) shows the
validated findings with example answers; the full page is saved for a person to look at
(the network plot's legibility is checked by eye; the path is printed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
if BROWSER is None:
    pytest.skip("no headless browser (apt-get install -y chromium)", allow_module_level=True)

#: colours only the finding cards use (html.py): the intervention-answer cell and the
#: validated border
ANSWER_CELL = (0xFD, 0xF6, 0xF5)
FINDING_BORDER = (0x1E, 0x84, 0x49)


def _shot(page: Path, out: Path, height: int) -> Path:
    run = subprocess.run(
        [BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--hide-scrollbars", f"--screenshot={out}", f"--window-size=1280,{height}", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and out.is_file(), run.stderr[-2000:]
    return out


def test_first_screen_shows_findings_with_answers(rendered: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = _shot(rendered / "report.html", tmp_path / "first-screen.png", 900)
    image = Image.open(shot).convert("RGB")
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20)}
    assert ANSWER_CELL in colours, "no example answer in the first screen"
    assert FINDING_BORDER in colours, "no validated finding in the first screen"
    full = _shot(rendered / "report.html", tmp_path / "dashboard-full.png", 4200)
    print(f"screenshots: {shot} {full}")
