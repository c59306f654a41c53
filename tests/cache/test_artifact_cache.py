"""ArtifactCache: keys, round trips, integrity, eviction and housekeeping."""

from __future__ import annotations

import json
import logging
import math
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from md_framework import cache as cache_mod
from md_framework.cache import ArtifactCache, cache_key
from md_framework.types import (
    CircuitGraph,
    Faithfulness,
    GraphEdge,
    GraphNode,
    LogitTarget,
    feature_node_id,
)

AWKWARD = [
    0.1 + 0.2, 1 / 3, -0.0, 0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
    -1.7976931348623157e308, 1e-7, 123456789.12345678, 2**53 + 1.0, math.pi, -math.e,
    9007199254740993.0, 1.0000000000000002, 0.1, 1e21, 1e22, 4.35e-5,
]


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def awkward_graph() -> CircuitGraph:
    nodes = [
        GraphNode(node_id=feature_node_id(i % 7, i % 5, i), kind="feature", layer=i % 7,
                  position=i % 5, feature=i, activation=v, influence=-v)
        for i, v in enumerate(AWKWARD)
    ]
    edges = [GraphEdge(source=nodes[i].node_id, target=nodes[i + 1].node_id, weight=AWKWARD[i])
             for i in range(len(nodes) - 1)]
    return CircuitGraph(
        prompt="The capital of France is \u00e9\u2603 \"quoted\" \n\ttab", family="geo",
        model_id="toy@sha256:abc", dictionary_id="tc:1", tracer="fake",
        input_tokens=["<s>", "The"], input_token_ids=[1, 2], nodes=nodes, edges=edges,
        logit_targets=[LogitTarget(token_id=3, token=" Paris", probability=0.30000000000000004)],
        faithfulness=Faithfulness(replacement_score=1 / 3, completeness_score=5e-324,
                                  error_node_share=0.1 + 0.2),
        metadata={"floats": AWKWARD[:4], "nested": {"x": 2.5e-310}},
    )


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "c")


# --------------------------------------------------------------------------- keys


def test_cache_key_is_canonical_and_sensitive() -> None:
    a = cache_key(model="m", prompt="p", options={"b": 1, "a": [1.5, 2]})
    b = cache_key(options={"a": [1.5, 2], "b": 1}, prompt="p", model="m")
    assert a == b and len(a) == 64
    assert a != cache_key(model="m", prompt="p ", options={"b": 1, "a": [1.5, 2]})
    assert a != cache_key(model="m2", prompt="p", options={"b": 1, "a": [1.5, 2]})
    assert cache_key(path=Path("/x/y")) == cache_key(path="/x/y")
    assert cache_key(spec=Faithfulness(replacement_score=0.5)) == cache_key(
        spec={"replacement_score": 0.5, "completeness_score": None, "error_node_share": None})
    assert cache_key(s={3, 1, 2}) == cache_key(s=[1, 2, 3])
    with pytest.raises(ValueError):
        cache_key(x=float("nan"))
    with pytest.raises(TypeError):
        cache_key(x=object())


def test_kernel_module_imports_without_torch() -> None:
    code = "import sys, md_framework.cache; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_pickle_on_read_paths() -> None:
    src = Path(cache_mod.__file__).read_text()
    assert "import pickle" not in src and "pickle.load" not in src and "torch.load" not in src


@pytest.mark.parametrize("kind,key", [("../x", "a"), ("Graph", "a"), ("g", "../../etc"),
                                      ("g", "a/b"), ("g", ""), ("g", ".hidden"), ("g", "x" * 129)])
def test_rejects_unsafe_names(cache: ArtifactCache, kind: str, key: str) -> None:
    with pytest.raises(ValueError):
        cache.put_json(kind, key, 1)


# --------------------------------------------------------------------------- round trips


def test_json_round_trip_and_stats(cache: ArtifactCache) -> None:
    key = cache_key(x=1)
    assert cache.get_json("graph", key) is None
    obj = {"floats": AWKWARD, "text": "\u00e9\u2603", "n": None, "nested": [[1, 2], {"a": True}]}
    cache.put_json("graph", key, obj)
    back = cache.get_json("graph", key)
    assert back == obj
    assert [_bits(x) for x in back["floats"]] == [_bits(x) for x in AWKWARD]
    assert cache.stats.hits == 1 and cache.stats.misses == 1 and cache.stats.writes == 1
    with pytest.raises(ValueError):
        cache.put_json("graph", key, {"x": float("inf")})
    assert cache.get_json("graph", key) == obj  # the failed write changed nothing


def test_circuit_graph_round_trip_is_bit_exact(cache: ArtifactCache) -> None:
    graph = awkward_graph()
    key = cache_key(model=graph.model_id, prompt=graph.prompt)
    cache.put_model("graph", key, graph)
    back = cache.get_model("graph", key, CircuitGraph)
    assert back == graph
    assert back.model_dump_json() == graph.model_dump_json()
    for n0, n1 in zip(graph.nodes, back.nodes):
        assert _bits(n0.activation) == _bits(n1.activation)
        assert _bits(n0.influence) == _bits(n1.influence)
    for e0, e1 in zip(graph.edges, back.edges):
        assert _bits(e0.weight) == _bits(e1.weight)
    assert math.copysign(1.0, back.nodes[2].activation) == -1.0  # -0.0 kept its sign
    # and through the plain JSON API as well
    cache.put_json("graph-json", key, graph.model_dump(mode="json"))
    assert CircuitGraph.model_validate(cache.get_json("graph-json", key)) == graph


def test_tensor_round_trip(cache: ArtifactCache) -> None:
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=gen)
    tensors = {
        "f32": base, "bf16": base.to(torch.bfloat16), "i64": torch.arange(10),
        "view": base[:, 1],  # non-contiguous view of the same storage
        "empty": torch.zeros(0, 3),
    }
    meta = {"layer": 3, "scale": 0.1 + 0.2, "names": ["a", "b"]}
    cache.put_tensors("activations", "k1", tensors, meta)
    got, got_meta = cache.get_tensors("activations", "k1")
    assert got_meta == meta
    assert set(got) == set(tensors)
    for name, tensor in tensors.items():
        assert got[name].dtype == tensor.dtype
        assert torch.equal(got[name], tensor.contiguous())
    with pytest.raises(ValueError, match="BF16"):  # numpy has no bfloat16; the entry stays
        cache.get_tensors("activations", "k1", framework="np")
    assert cache.contains("activations", "k1") and cache.stats.corrupt == 0
    del tensors["bf16"]
    cache.put_tensors("activations", "k2", tensors)
    arrays, _ = cache.get_tensors("activations", "k2", framework="np")
    assert arrays["f32"].tobytes() == base.numpy().tobytes()


def test_numpy_tensors(cache: ArtifactCache) -> None:
    np = pytest.importorskip("numpy")
    pytest.importorskip("safetensors")
    arr = np.linspace(0, 1, 17, dtype=np.float64).reshape(1, 17)
    cache.put_tensors("activations", "np", {"a": arr})
    got, meta = cache.get_tensors("activations", "np", framework="np")
    assert meta == {} and got["a"].tobytes() == arr.tobytes()


def test_dir_round_trip_and_replace(cache: ArtifactCache, tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"a": 1}')
    (src / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    path = cache.put_dir("model-hf", "m1", src)
    assert src.exists() and path.is_dir()
    assert cache.get_dir("model-hf", "m1") == path
    assert (path / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert cache.info()["by_kind"]["model-hf"] == {"entries": 1, "bytes": 2008}
    # replacing an existing directory entry is atomic and leaves only the new tree
    (src / "config.json").write_text('{"a": 2}')
    (src / "sub" / "weights.bin").unlink()
    cache.put_dir("model-hf", "m1", src, move=True)
    assert not src.exists()
    got = cache.get_dir("model-hf", "m1")
    assert (got / "config.json").read_text() == '{"a": 2}' and not (got / "sub" / "weights.bin").exists()


def test_dir_refuses_symlinks(cache: ArtifactCache, tmp_path: Path) -> None:
    src = tmp_path / "d"
    src.mkdir()
    (src / "evil").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="not a regular file|symlink"):
        cache.put_dir("dictionary", "d", src)
    assert not cache.contains("dictionary", "d")
    assert list((cache.root / "tmp").iterdir()) == []


def test_building_dir_is_atomic_on_error(cache: ArtifactCache) -> None:
    with pytest.raises(RuntimeError):
        with cache.building_dir("dictionary", "tc") as staged:
            (staged / "layer_0.safetensors").write_bytes(b"partial")
            raise RuntimeError("builder crashed")
    assert cache.get_dir("dictionary", "tc") is None
    assert cache.path_for("dictionary", "tc") is None
    assert not (cache.root / "objects" / "dictionary").exists()
    assert list((cache.root / "tmp").iterdir()) == []


# --------------------------------------------------------------------------- integrity


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampered_json_is_detected_removed_and_rebuilt(cache: ArtifactCache, caplog) -> None:
    graph = awkward_graph()
    cache.put_model("graph", "g", graph)
    path = cache.path_for("graph", "g")
    # a valid-JSON, schema-valid tamper: only the checksum can catch it
    tampered = json.loads(path.read_text())
    tampered["nodes"][0]["activation"] = 42.0
    path.write_text(json.dumps(tampered))
    with caplog.at_level(logging.WARNING, logger="md_framework.cache"):
        assert cache.get_model("graph", "g", CircuitGraph) is None
    assert "checksum mismatch" in caplog.text and "graph/g" in caplog.text
    assert not path.exists() and not cache.contains("graph", "g")
    assert cache.stats.corrupt == 1
    calls = []
    rebuilt = cache.get_or_create("graph", "g", lambda: calls.append(1) or graph, fmt="model",
                                  cls=CircuitGraph)
    assert rebuilt == graph and calls == [1]
    assert cache.get_model("graph", "g", CircuitGraph) == graph


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "empty"])
def test_corrupt_tensor_file_is_a_miss(cache: ArtifactCache, damage: str) -> None:
    torch = pytest.importorskip("torch")
    cache.put_tensors("activations", "t", {"x": torch.ones(1000)}, {"a": 1})
    path = cache.path_for("activations", "t")
    if damage == "flip":
        _flip_last_byte(path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(b"")
    assert cache.get_tensors("activations", "t") is None
    assert not cache.contains("activations", "t")
    built = cache.get_or_create("activations", "t", lambda: ({"x": torch.ones(1000)}, {"a": 1}),
                                fmt="tensors")
    assert built[1] == {"a": 1}
    assert torch.equal(cache.get_tensors("activations", "t")[0]["x"], torch.ones(1000))


def test_malicious_safetensors_header_is_refused(cache: ArtifactCache) -> None:
    """Bytes that pass the checksum (recorded by an attacker with index access) but are not
    a valid safetensors file are discarded, never executed."""
    bogus = b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"x":"\\u0000"}  ' + b"cos\nsystem\n"
    cache._put_bytes("activations", "bad", "safetensors", bogus)
    assert cache.get_tensors("activations", "bad") is None
    assert cache.stats.corrupt == 1


@pytest.mark.parametrize("damage", ["modify", "add", "remove"])
def test_tampered_directory_is_detected(cache: ArtifactCache, tmp_path: Path, damage: str) -> None:
    src = tmp_path / "tc"
    src.mkdir()
    (src / "layer_0.safetensors").write_bytes(b"abc" * 100)
    (src / "config.yaml").write_text("a: 1\n")
    path = cache.put_dir("dictionary", "tc", src)
    if damage == "modify":
        _flip_last_byte(path / "layer_0.safetensors")
    elif damage == "add":
        (path / "extra.py").write_text("import os\n")
    else:
        (path / "config.yaml").unlink()
    assert cache.get_dir("dictionary", "tc") is None
    assert not path.exists()
    rebuilt = cache.get_or_create(
        "dictionary", "tc", lambda d: (d / "config.yaml").write_text("a: 1\n"), fmt="dir")
    assert (rebuilt / "config.yaml").read_text() == "a: 1\n"
    assert cache.get_dir("dictionary", "tc") == rebuilt


def test_model_that_no_longer_validates_is_a_miss(cache: ArtifactCache) -> None:
    cache.put_json("graph", "old", {"not": "a graph"})
    assert cache.get_model("graph", "old", CircuitGraph) is None
    assert not cache.contains("graph", "old")


def test_verify_all(cache: ArtifactCache) -> None:
    for i in range(3):
        cache.put_json("graph", f"k{i}", {"i": i})
    _flip_last_byte(cache.path_for("graph", "k1"))
    assert cache.verify_all() == [("graph", "k1")]
    assert [e.key for e in cache.entries()] == ["k0", "k2"]


# --------------------------------------------------------------------------- housekeeping


def test_lru_eviction_by_last_access(tmp_path: Path, monkeypatch) -> None:
    clock = iter(range(1000, 2000))
    monkeypatch.setattr(cache_mod.time, "time", lambda: float(next(clock)))
    cache = ArtifactCache(tmp_path / "c", max_bytes=2500)
    blob = "x" * 1000  # ~1 kB entries
    cache.put_json("graph", "a", blob)
    cache.put_json("graph", "b", blob)
    assert cache.get_json("graph", "a") == blob  # a is now more recent than b
    cache.put_json("graph", "c", blob)  # 3 kB > 2.5 kB: evict the least recently used (b)
    assert [e.key for e in cache.entries()] == ["a", "c"]
    assert cache.stats.evicted == 1
    assert cache.path_for("graph", "b") is None
    assert len(list((cache.root / "objects" / "graph").rglob("*.json"))) == 2
    # an entry larger than the limit is kept alone (the newest write is never evicted)
    cache.put_json("graph", "huge", "y" * 5000)
    assert [e.key for e in cache.entries()] == ["huge"]
    assert cache.total_bytes() == cache.info()["bytes"]


def test_clear_old_entries_and_clear(tmp_path: Path, monkeypatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(cache_mod.time, "time", lambda: now[0])
    cache = ArtifactCache(tmp_path / "c")
    cache.put_json("graph", "old", 1)
    cache.put_json("activations", "used", 2)
    now[0] += 5 * 86400
    cache.get_json("activations", "used")  # accessed recently, though created long ago
    cache.put_json("graph", "new", 3)
    now[0] += 2 * 86400
    assert cache.clear_old_entries(3) == 1
    assert {e.key for e in cache.entries()} == {"used", "new"}
    assert cache.clear_old_entries(3, by="created") == 1
    assert {e.key for e in cache.entries()} == {"new"}
    cache.put_json("activations", "x", 1)
    info = cache.info()
    assert info["entries"] == 2 and set(info["by_kind"]) == {"graph", "activations"}
    assert cache.clear("activations") == 1
    assert cache.clear() == 1
    assert cache.info()["entries"] == 0 and cache.info()["bytes"] == 0


def test_clear_removes_orphans_and_stale_tmp(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "c")
    orphan = cache.root / "objects" / "graph" / "or" / "orphan.0123456789abcdef.json"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("{}")  # a crash after os.replace, before the index insert
    assert cache.get_json("graph", "orphan") is None  # never trusted without an index row
    cache.clear()
    assert not orphan.exists()


def test_cache_is_picklable(cache: ArtifactCache) -> None:
    cache.put_json("graph", "k", [1])
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.root == cache.root and clone.get_json("graph", "k") == [1]


def test_get_or_create_builds_once(cache: ArtifactCache) -> None:
    calls: list[int] = []
    for _ in range(3):
        assert cache.get_or_create("graph", "k", lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert calls == [1]
    assert cache.stats.misses == 1 and cache.stats.hits == 2


def test_shape_offset_mismatch_is_refused(cache: ArtifactCache) -> None:
    header = json.dumps({"x": {"dtype": "F32", "shape": [100], "data_offsets": [0, 8]}}).encode()
    bogus = len(header).to_bytes(8, "little") + header + b"\x00" * 8
    cache._put_bytes("activations", "bad2", "safetensors", bogus)
    assert cache.get_tensors("activations", "bad2") is None
    assert not cache.contains("activations", "bad2")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_index_is_moved_aside_and_nothing_is_trusted(tmp_path: Path, caplog, damage) -> None:
    root = tmp_path / "c"
    cache = ArtifactCache(root)
    for i in range(20):
        cache.put_json("graph", f"k{i}", {"i": i, "pad": "x" * 2000})
    cache.close()
    index = root / "index.sqlite"
    for suffix in ("-wal", "-shm"):  # checkpoint happened on close; drop the side files
        (root / f"index.sqlite{suffix}").unlink(missing_ok=True)
    if damage == "garbage":
        index.write_bytes(b"this is not a database" * 100)
    else:
        data = index.read_bytes()
        index.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    with caplog.at_level(logging.WARNING, logger="md_framework.cache"):
        reopened = ArtifactCache(root)
        assert reopened.get_json("graph", "k1") is None  # never served without its checksum
    assert "unreadable" in caplog.text
    assert list(root.glob("index.sqlite.corrupt-*"))
    assert reopened.get_or_create("graph", "k1", lambda: {"i": 1}) == {"i": 1}
    assert reopened.get_json("graph", "k1") == {"i": 1}
    reopened.clear()
    assert list((root / "objects").rglob("*.json")) == []  # orphans removed
