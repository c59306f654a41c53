"""Writers killed with SIGKILL at random points never leave a corrupt or dangling entry."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from md_framework.cache import ArtifactCache

WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from md_framework.cache import ArtifactCache
    cache = ArtifactCache(sys.argv[1], max_bytes=3_000_000)
    print("ready", flush=True)
    i = 0
    while True:
        key = f"k{i % 7}"
        cache.put_json("graph", key, {"i": i, "pad": "x" * (20_000 + i % 5000)})
        with cache.building_dir("model-hf", f"d{i % 3}") as d:
            (d / "weights.bin").write_bytes(os.urandom(200_000))
            (d / "config.json").write_text(str(i))
        cache.get_json("graph", key)
        i += 1
""")


def test_sigkill_during_writes(tmp_path: Path) -> None:
    root = tmp_path / "c"
    rng = random.Random(1234)
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        cache = ArtifactCache(root)
        assert cache.verify_all() == [], f"corrupt entry after kill {round_}"
        for entry in cache.entries():
            if entry.format == "json":
                assert cache.get_json(entry.kind, entry.key)["pad"].startswith("x")
            else:
                got = cache.get_dir(entry.kind, entry.key)
                assert (got / "weights.bin").stat().st_size == 200_000
        cache.close()
    assert ArtifactCache(root).info()["entries"] > 0


def test_leftovers_of_dead_writers_are_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "c"
    ArtifactCache(root)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (root / "tmp" / f"{dead}-abc.json").write_text("partial")
    (root / "tmp" / f"{dead}-def.d").mkdir()
    mine = root / "tmp" / f"{os.getpid()}-ghi.json"
    mine.write_text("in progress")  # a live writer's file stays
    ArtifactCache(root)
    assert [p.name for p in (root / "tmp").iterdir()] == [mine.name]
