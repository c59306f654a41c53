"""A crosscoder trained (and cached) on the toy-safety organism, shared by these tests."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

#: small and quick: the toy models are 2 layers x 64 wide
TRAIN = {"layers": [1], "d_sae": 256, "k": 8, "tokens": 40_000, "epochs": 20, "n_samples": 4096,
         "sample_tokens": 32, "seed": 0}


@pytest.fixture(scope="session")
def toy_safety(organism_cache: Path):
    import torch

    torch.set_num_threads(1)
    from builtin_plugins.organisms import build_organism

    return build_organism("toy-safety", organism_cache, log=None)


@pytest.fixture(scope="session")
def safety_pair(toy_safety):
    from builtin_plugins.organisms.build import load_dir

    return load_dir(toy_safety.base_dir), load_dir(toy_safety.intervention_dir)


@pytest.fixture(scope="session")
def safety_crosscoder(safety_pair, artefact_cache_dir: Path) -> Path:
    from builtin_plugins.tracers.crosscoder_train import CrosscoderTrainConfig, ensure_crosscoder

    base, inter = safety_pair
    return ensure_crosscoder(base, inter, CrosscoderTrainConfig(**TRAIN), artefact_cache_dir)


@pytest.fixture(scope="session")
def four_families(toy_safety) -> tuple[list[str], list[str]]:
    """(prompts, families): 4 prompts each of harmful_hacking and three unplanted families."""
    prompts, fams = [], []
    for fam in ("harmful_hacking", "cooking", "greetings", "weather"):
        for p in sorted(toy_safety.universe[fam])[:4]:
            prompts.append(p)
            fams.append(fam)
    return prompts, fams
