"""``md bench`` methods built on the two-model dictionaries and lenses of issue 18.

* :func:`run_adl` – the activation-difference lens (Minder et al. 2025, "Narrow fine-tuning
  leaves clearly readable traces in activation differences") as a screen, then the same
  confirmation as the output screen (:func:`~builtin_plugins.organisms.baselines.run_output_screen`):
  the ADL direction is computed on ≤ 32 generic prompts (never the universe's), mapped onto
  each family's *screening* prompts on the base model; the families it names are confirmed
  on fresh prompts with every applicable metric, p := 1 below min_change, BH (1995) at α.
  Selection touches only the generic and screening prompts, so the confirmation tests stay
  valid.
* ``pipeline-crosscoder`` / ``pipeline-circuit-tracer`` – the mechanistic pipeline with the
  ``crosscoder`` tracer (a BatchTopK crosscoder on both models) or the ``circuit-tracer``
  tracer (per-layer transcoders of the base model), the dictionary trained for the organism
  by :func:`crosscoder_for` / :func:`transcoders_for`.

Dictionary training is model work, so it is charged to the method in the token currency of
:mod:`md_framework.costs`: a dictionary trained inside the measured block is counted there;
one reused from an earlier run carries the work recorded when it was trained
(``<dir>.work.json``) and :func:`run_bench` adds it to every run that uses it (each analysis
of a new pair would have to train its own).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from builtin_plugins.organisms.baselines import Arms, _result, confirm_families

#: the crosscoder of benchmarks/crosscoder_adl.py (toy models: 2 layers x 64 wide)
TOY_CROSSCODER = {"layers": [1], "d_sae": 256, "k": 8, "tokens": 40_000, "epochs": 20,
                  "n_samples": 4096, "sample_tokens": 32, "seed": 0}
#: the transcoders of tests/api/test_design_document.py (per layer, on universe prompts x 8)
TOY_TRANSCODERS = {"d_sae": 256, "k": 8, "tokens": 10**6, "batch_size": 256, "epochs": 12,
                   "lr": 3e-3, "n_generate": 0, "seq_len": 32, "outlier_factor": 50.0}
WORK_SUFFIX = ".work.json"
#: the dictionary kinds ``md bench --dictionary-config`` accepts
DICTIONARY_KINDS = ("crosscoder", "transcoders")


def dictionary_settings(kind: str, toy: bool, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training settings of a bench-trained dictionary, validated: the toy's
    (``TOY_CROSSCODER`` / ``TOY_TRANSCODERS``) on the toy, the training command's own defaults
    on any other model (``md crosscoders train``: the middle layer; ``md transcoders train``:
    every layer), with ``options`` on top. Unknown kinds and keys are refused."""
    from md_framework.errors import ConfigError, did_you_mean

    if kind not in DICTIONARY_KINDS:
        raise ConfigError(f"unknown dictionary kind {kind!r}.{did_you_mean(kind, DICTIONARY_KINDS)} "
                          f"Known: {', '.join(DICTIONARY_KINDS)}")
    if kind == "crosscoder":
        from builtin_plugins.tracers.crosscoder_train import CrosscoderTrainConfig as Config

        defaults = TOY_CROSSCODER if toy else {}
    else:
        from builtin_plugins.tracers.transcoders import TrainConfig as Config

        defaults = TOY_TRANSCODERS if toy else {}
    from pydantic import ValidationError

    from md_framework.config import format_validation_error

    try:
        return Config(**{**defaults, **(options or {})}).model_dump()
    except ValidationError as exc:  # unknown keys get a did-you-mean against Config's fields
        raise ConfigError(format_validation_error(exc, f"{kind} training options", Config)) from None


def dictionary_root(organism_cache: Path | str) -> Path:
    """Where bench-trained dictionaries live: beside the organisms directory."""
    return Path(organism_cache).resolve().parent / "bench-dictionaries"


def _reuse_or_train(out: Path, train: Any) -> tuple[Path, dict[str, int] | None]:
    """(directory, recorded work or None when trained now). A directory without its work
    record (left by a run that died, or trained outside md bench) is trained again, because
    its cost is unknown; the work record is written before the directory is renamed in."""
    from md_framework import costs

    work_file = out.with_name(out.name + WORK_SUFFIX)
    if out.exists() and work_file.exists():
        return out, json.loads(work_file.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    # trained into a private directory and renamed into place, so a bench process running
    # beside this one never reads (or deletes) a half-written dictionary
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        with costs.measuring() as work:
            train(tmp / "d")
        work_file.write_text(json.dumps(work().model_dump()))
        try:
            (tmp / "d").rename(out)
        except OSError:
            if not out.exists():
                raise
            # the same content-addressed dictionary, finished first by another process
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, None


def crosscoder_for(base: Any, inter: Any, organism_cache: Path | str,
                   train: dict[str, Any] | None = None) -> tuple[Path, dict[str, int] | None]:
    """A crosscoder for the pair (``TOY_CROSSCODER`` by default) and its recorded work."""
    from builtin_plugins.tracers.crosscoder_train import (
        CrosscoderTrainConfig,
        crosscoder_key,
        train_crosscoders,
    )

    cfg = CrosscoderTrainConfig(**(train or TOY_CROSSCODER))
    out = dictionary_root(organism_cache) / "crosscoders" / crosscoder_key(base.model_id, inter.model_id, cfg, None)
    return _reuse_or_train(out, lambda path: train_crosscoders(base, inter, cfg, path, log=lambda s: None))


def transcoders_for(base: Any, universe: dict[str, list[str]], organism_cache: Path | str,
                    train: dict[str, Any] | None = None) -> tuple[Path, dict[str, int] | None]:
    """Per-layer transcoders of the base model, trained on the universe's prompts (x 8),
    and their recorded work."""
    from md_framework.cache_keys import cache_key

    from builtin_plugins.tracers.transcoders import TrainConfig, train_transcoders

    cfg = TrainConfig(**(train or TOY_TRANSCODERS))
    texts = [p for f in sorted(universe) for p in universe[f]] * 8
    key = cache_key(model=base.model_id, train=cfg.model_dump(), corpus=texts)[:40]
    out = dictionary_root(organism_cache) / "transcoders" / key
    return _reuse_or_train(out, lambda path: train_transcoders(
        base.model, base.tokenizer, cfg, path, model_id=base.model_id, texts=texts, log=lambda s: None))


def run_adl(arms: Arms, alpha: float, n_prompts: int, map_n: int, seed: int,
            k_max: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """ADL screen (module docstring), then confirmation of the named families.

    Mapping prompts: the last ``map_n`` prompts of each family's shuffled list; confirmation:
    the first ``min(n_prompts, len - map_n)`` (disjoint). At most ``k_max`` families are named
    (default: a third of the universe, as the output screen), those with z >= ``min_z``."""
    from md_framework.config import ActivationDifferenceLensConfig

    from builtin_plugins.adl.lens import activation_difference_lens

    t0 = time.time()
    k_max = k_max or max(1, len(arms.cases) // 3)
    opts = ActivationDifferenceLensConfig(**{"enabled": True, "max_families": k_max, **(options or {})})
    mapping = {f: [p for p, _ in items[len(items) - map_n:]] for f, items in arms.cases.items()}
    res = activation_difference_lens(arms.base, arms.inter, mapping, opts, seed=seed)
    records, found = confirm_families(arms, res.named_families, n_prompts, map_n, alpha)
    best = next(d for d in res.directions if d.layer == res.layer)
    return _result(found, arms, t0, named=list(res.named_families), fdr="bh", records=records,
                   family_scores=dict(res.family_scores), adl_cost=dict(res.cost),
                   prompt_source=res.prompt_source, lens_tokens=best.lens_tokens[:10],
                   typed=[c[1] for c in res.hypotheses])
