"""Open the dashboard in headless Chromium: it renders with no console messages (the page
has no scripts, so any console line means an error or a CSP refusal), every key section and
image is in the DOM, and a screenshot is saved next to the test's output."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
if BROWSER is None:
    pytest.skip(
        "no headless browser: none of chromium, chromium-browser, google-chrome found on PATH"
        " (CI installs Debian's chromium: apt-get install -y chromium)",
        allow_module_level=True,
    )

CONSOLE = re.compile(r"CONSOLE[:(]|Uncaught|Refused to|Failed to load resource")


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--disable-extensions", "--hide-scrollbars", "--enable-logging=stderr", "--v=0", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


def test_console_check_catches_errors(tmp_path):
    """Negative control: the console check sees a script error."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    run = _chromium("--dump-dom", page.as_uri())
    assert any("Uncaught" in line for line in _console_lines(run.stderr)), run.stderr[-2000:]


def test_dashboard_renders_in_chromium(rendered: Path, tmp_path: Path):
    page = (rendered / "report.html").as_uri()
    dom = _chromium("--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == [], _console_lines(dom.stderr)
    html = dom.stdout
    for section in ("overview", "plots", "hypotheses", "fdr", "bandit", "changes", "exports", "hyp-1"):
        assert f'id="{section}"' in html, section
    assert html.count('src="data:image/png;base64,') >= 6
    assert "<script" not in html  # the hostile outputs stayed text in the live DOM
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html

    shot = tmp_path / "dashboard.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", page)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    assert _console_lines(run.stderr) == []
    from PIL import Image

    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2400)
    lo, hi = image.getextrema()
    assert hi - lo > 150  # not a blank page
    print(f"screenshot: {shot}")
