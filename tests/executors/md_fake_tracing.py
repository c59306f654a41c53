"""A fake model loader plugin and a fake tracer, importable by worker processes.

The tracer is deterministic and produces awkward floats, so any executor or cache that
changed a single bit would be caught.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

from md_framework import hookimpl
from md_framework.plugins import get_plugin_manager
from md_framework.runtime import LoadedModel, ModelLoadOptions, ModelSpec
from md_framework.tracing_api import Tracer
from md_framework.types import (
    CircuitGraph,
    Faithfulness,
    GraphEdge,
    GraphNode,
    LogitTarget,
    StrictModel,
    feature_node_id,
    logit_node_id,
)

#: Directory where every fake model load and trace drops a marker (set by tests).
MARKERS_ENV = "MD_FAKE_TRACING_MARKERS"


def _mark(what: str) -> None:
    directory = os.environ.get(MARKERS_ENV)
    if directory:
        with open(os.path.join(directory, f"{what}.{os.getpid()}.{os.urandom(4).hex()}"), "w"):
            pass


class FakeModel:
    def __init__(self, weights: str) -> None:
        self.weights = weights


class FakeLoader:
    """Loads ``fake:<weights>`` sources; anything else is not ours (``None``)."""

    @hookimpl
    def md_load_model(self, spec: ModelSpec, options: ModelLoadOptions) -> LoadedModel | None:
        if not spec.source.startswith("fake:"):
            return None
        weights = spec.source[len("fake:"):]
        _mark("load")
        digest = hashlib.sha256(weights.encode()).hexdigest()[:16]
        return LoadedModel(model=FakeModel(weights), tokenizer=None,
                           model_id=f"fake-{weights}@{digest}", spec=spec)


def fake_plugin_manager(extra_blocked: Sequence[str] = ()):
    """A fresh manager with only the kernel builtins we need plus the fake loader."""
    return get_plugin_manager(
        autoload=False, blocked=["model-loaders", "tracing-commands", *extra_blocked],
        extra_plugins=[("fake-loader", FakeLoader())],
    )


class FakeOptions(StrictModel):
    n_features: int = 6
    scale: float = 1.0
    dictionary: str = "fake-dict-v1"


class FakeTracer(Tracer):
    Options = FakeOptions
    name = "fake"

    def identity(self) -> str:
        return f"fake:{self.options.model_dump_json()}"

    def trace(self, model: LoadedModel, prompts: Sequence[str],
              families: Sequence[str | None] | None = None) -> list[CircuitGraph]:
        families = list(families) if families is not None else [None] * len(prompts)
        graphs = []
        for prompt, family in zip(prompts, families):
            _mark("trace")
            seed = hashlib.sha256(f"{model.model.weights}|{prompt}".encode()).digest()
            rng = random.Random(seed)
            tokens = prompt.split() or [""]
            nodes = []
            for i in range(self.options.n_features):
                layer, pos = i % 3, i % len(tokens)
                nodes.append(GraphNode(
                    node_id=feature_node_id(layer, pos, rng.randrange(1000)), kind="feature",
                    layer=layer, position=pos, feature=i,
                    activation=rng.random() * self.options.scale / 3.0,
                    influence=rng.gauss(0.0, 1.0) * 1e-300,
                ))
            nodes.append(GraphNode(node_id=logit_node_id(7), kind="logit", token_id=7))
            edges = [GraphEdge(source=a.node_id, target=nodes[-1].node_id, weight=rng.uniform(-1, 1) / 7)
                     for a in nodes[:-1]]
            graphs.append(CircuitGraph(
                prompt=prompt, family=family, model_id=model.model_id,
                dictionary_id=self.options.dictionary, tracer=self.name,
                input_tokens=tokens, input_token_ids=list(range(len(tokens))),
                nodes=nodes, edges=edges,
                logit_targets=[LogitTarget(token_id=7, token=" x", probability=rng.random())],
                faithfulness=Faithfulness(replacement_score=rng.random(), error_node_share=0.1 + 0.2),
                metadata={"pid_free": True},
            ))
        return graphs


def fake_tracer_factory(name: str, options: Mapping[str, Any]) -> Tracer:
    assert name == "fake", name
    return FakeTracer(options)


def square(x: int) -> int:
    return x * x


def slow_identity(x: float) -> float:
    import time

    time.sleep(x)
    return x


def boom(x: int) -> int:
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x


def pid_of(_: Any) -> int:
    return os.getpid()
