"""Cache hit latency of md_framework.cache.ArtifactCache.

    python benchmarks/cache_bench.py [--repeats 50] [--root DIR] [--json]

Measures, on a fresh cache root (default: a temporary directory):

* a graph-sized entry: a CircuitGraph with 2,000 nodes and 10,000 edges stored with
  ``put_model`` and read with ``get_model`` (checksum + pydantic validation) and
  ``get_json`` (checksum + json.loads);
* a 10 MB tensor entry (float32 [2500, 1000]) with ``put_tensors`` / ``get_tensors``;
* a 64 MB directory entry (``get_dir`` re-hashes every file on each hit);
* a miss (index look-up only) and the sha256 cost alone, for reference.

Every hit includes the checksum verification and the last-access update.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from md_framework.cache import ArtifactCache, cache_key
from md_framework.types import CircuitGraph, GraphEdge, GraphNode, feature_node_id


def make_graph(n_nodes: int = 2000, n_edges: int = 10000, seed: int = 0) -> CircuitGraph:
    rng = random.Random(seed)
    nodes = [
        GraphNode(node_id=feature_node_id(i % 30, i % 40, i), kind="feature", layer=i % 30,
                  position=i % 40, feature=i, activation=rng.random() * 10,
                  influence=rng.gauss(0, 1))
        for i in range(n_nodes)
    ]
    edges = [
        GraphEdge(source=nodes[rng.randrange(n_nodes)].node_id,
                  target=nodes[rng.randrange(n_nodes)].node_id, weight=rng.gauss(0, 0.1))
        for _ in range(n_edges)
    ]
    return CircuitGraph(prompt="The capital of France is", model_id="bench", tracer="bench",
                        nodes=nodes, edges=edges)


def timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    fn()  # warm-up (page cache, imports)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - start) * 1000)
        assert result is not None or fn.__name__ == "miss"
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "p90_ms": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
        "min_ms": samples[0],
    }


def run(root: Path, repeats: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(1)
    cache = ArtifactCache(root)
    results: dict[str, object] = {}

    graph = make_graph()
    gkey = cache_key(bench="graph")
    start = time.perf_counter()
    cache.put_model("graph", gkey, graph)
    put_graph_ms = (time.perf_counter() - start) * 1000
    size = cache.entries("graph")[0].size
    back = cache.get_model("graph", gkey, CircuitGraph)
    assert back == graph
    raw = cache.path_for("graph", gkey).read_bytes()
    results["graph get_model (2k nodes, 10k edges)"] = {
        "bytes": size, "put_ms": put_graph_ms,
        **timed(lambda: cache.get_model("graph", gkey, CircuitGraph), repeats)}
    results["graph get_json (same entry)"] = {
        "bytes": size, **timed(lambda: cache.get_json("graph", gkey), repeats)}
    results["graph verified bytes only (read + sha256 + access time)"] = {
        "bytes": size, **timed(lambda: cache._read_bytes("graph", gkey, "json"), repeats)}
    results["  of which sha256 of the graph bytes"] = {
        "bytes": size, **timed(lambda: hashlib.sha256(raw).hexdigest(), repeats)}
    results["  of which CircuitGraph.model_validate_json"] = {
        "bytes": size, **timed(lambda: CircuitGraph.model_validate_json(raw), repeats)}

    tensor = torch.randn(2500, 1000, generator=torch.Generator().manual_seed(0))
    tkey = cache_key(bench="tensor")
    start = time.perf_counter()
    cache.put_tensors("activations", tkey, {"acts": tensor}, {"layer": 3})
    put_tensor_ms = (time.perf_counter() - start) * 1000
    got, _meta = cache.get_tensors("activations", tkey)
    assert torch.equal(got["acts"], tensor)
    results["tensor get_tensors (10 MB float32)"] = {
        "bytes": cache.entries("activations")[0].size, "put_ms": put_tensor_ms,
        **timed(lambda: cache.get_tensors("activations", tkey), repeats)}

    dkey = cache_key(bench="dir")
    with cache.building_dir("model-hf", dkey) as staged:
        for i in range(4):
            (staged / f"shard-{i}.safetensors").write_bytes(os.urandom(16 << 20))
        (staged / "config.json").write_text("{}")
    results["dir get_dir (64 MB, 5 files)"] = {
        "bytes": cache.entries("model-hf")[0].size,
        **timed(lambda: cache.get_dir("model-hf", dkey), max(5, repeats // 5))}

    def miss() -> object:
        return cache.get_json("graph", "missing-key")

    results["tensor verified bytes only"] = {
        "bytes": cache.entries("activations")[0].size,
        **timed(lambda: cache._read_bytes("activations", tkey, "safetensors"), repeats)}
    results["miss (index look-up)"] = {"bytes": 0, **timed(miss, repeats)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--root", type=Path, default=None, help="cache root (default: temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="md-cache-bench-") as tmp:
        root = args.root or Path(tmp) / "cache"
        results = run(root, args.repeats)
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "machine": platform.platform(),
                          "cpus": os.cpu_count(), "results": results}, indent=2))
        return 0
    print("| entry | size | put (ms) | hit median (ms) | hit p90 (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name, row in results.items():
        put = f"{row['put_ms']:.1f}" if "put_ms" in row else ""
        mb = row["bytes"] / 1e6
        print(f"| {name} | {mb:.2f} MB | {put} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
