"""Render a report directory, or a synthetic demo one, and optionally screenshot it.

    python examples/report_from_json.py                 # synthetic demo into ./md-report-demo
    python examples/report_from_json.py RUN_DIR         # re-render RUN_DIR/report.json (like `md report`)
    python examples/report_from_json.py --screenshot    # also save dashboard.png with headless Chromium
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from builtin_plugins.report import load_report, print_rich_summary, render_report, save_graph_pair, save_report
from builtin_plugins.report.synthetic import synthetic_bench_results, synthetic_graph_pair, synthetic_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="?", type=Path)
    parser.add_argument("--out", type=Path, default=Path("md-report-demo"))
    parser.add_argument("--screenshot", action="store_true")
    args = parser.parse_args()

    if args.directory is None:  # a demo directory as `md analyze` would leave it
        out = args.out
        save_report(synthetic_report(hostile=False), out)
        save_graph_pair(*synthetic_graph_pair(), out, "thermite")
        (out / "bench.json").write_text(json.dumps(synthetic_bench_results(), indent=1))
        source = out
    else:
        source = out = args.directory
    report = load_report(source)
    render_report(report, out, source_dir=source)
    save_report(report, out)
    print_rich_summary(report)
    print(f"open {(out / 'report.html').resolve().as_uri()}")

    if args.screenshot:
        browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
        if browser is None:
            raise SystemExit("no chromium/google-chrome on PATH")
        shot = out / "dashboard.png"
        subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                        f"--screenshot={shot.resolve()}", "--window-size=1280,2400",
                        (out / "report.html").resolve().as_uri()], check=True, capture_output=True, timeout=120)
        print(f"screenshot: {shot}")


if __name__ == "__main__":
    main()
