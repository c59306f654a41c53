from __future__ import annotations

from pathlib import Path


def test_bench_baselines_on_toy_organism(toy_multi, organism_cache: Path, tmp_path: Path):
    from builtin_plugins.organisms.bench import BenchConfig, run_bench

    cfg = BenchConfig(specs=["toy-multi"], out_dir=tmp_path, cache_dir=organism_cache,
                      methods=["pipeline", "exhaustive", "bandit"], n_prompts=12, screen_n=3,  # n=8: Wilcoxon min p 0.0078 > first SAFFRON level
                      metrics=["refusal_probability", "uppercase_ratio", "target_logprob"], threads=1)
    out = run_bench(cfg, log=lambda *a, **k: None)
    rows = {r["method"]: r for r in out["rows"]}
    assert rows["exhaustive"]["status"] == "ok"
    assert rows["exhaustive"]["recall"] == 1.0
    assert rows["exhaustive"]["queries"] == 12 * 3 * 2 * 12
    assert rows["bandit"]["status"] == "ok"
    assert rows["bandit"]["recall"] >= 2 / 3
    assert rows["bandit"]["queries"] < rows["exhaustive"]["queries"]
    assert rows["pipeline"]["status"] in ("ok", "not available", "failed")
    if rows["pipeline"]["status"] != "ok":
        assert rows["pipeline"]["error"] and "recall" not in rows["pipeline"]
    assert (tmp_path / "bench.json").exists() and "| organism |" in (tmp_path / "bench.md").read_text()
