"""Pluggy plugin ``organisms``: the ``organism:`` model loader, the named prompt-family
generators, and the ``md organism build`` / ``md bench`` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from md_framework import hookimpl
from md_framework.errors import ConfigError

PREFIX = "organism:"


def parse_reference(source: str) -> tuple[str, str]:
    """``organism:<spec path or builtin name>#base|#intervention`` -> (spec ref, part)."""
    if not source.startswith(PREFIX):
        raise ConfigError(f"not an organism reference: {source!r}")
    ref, _, part = source[len(PREFIX):].partition("#")
    part = part or "intervention"
    if part not in ("base", "intervention") or not ref:
        raise ConfigError(
            f"organism reference {source!r} must look like organism:<spec>#base or #intervention")
    return ref, part


@hookimpl
def md_load_model(spec: Any, options: Any) -> Any:
    if not spec.source.startswith(PREFIX):
        return None
    from md_framework.runtime import ModelSpec

    from builtin_plugins.models.loaders import load_model
    from builtin_plugins.organisms.build import build_organism

    ref, part = parse_reference(spec.source)
    built = build_organism(ref, Path(options.cache_dir) / "organisms")
    # the built organism is an ordinary HF directory: device, dtype and quantization are
    # honoured (or rejected) by the same loader as any local model, never dropped
    loaded = load_model(ModelSpec(source=str(built.model_dir(part))), options)
    loaded.spec = spec
    loaded.loader = "organism"
    return loaded


@hookimpl
def md_load_universe(source: str, n_per_family: int, seed: int) -> dict[str, list[str]] | None:
    """The universe of an organism spec (path or builtin name); never planted information."""
    import random

    from builtin_plugins.organisms.build import load_universe
    from builtin_plugins.organisms.spec import resolve_spec_path

    ref = source[len(PREFIX):].partition("#")[0] if source.startswith(PREFIX) else source
    try:
        resolve_spec_path(ref)
    except ConfigError:
        return None
    out = {}
    for family, prompts in load_universe(ref).items():
        prompts = list(prompts)
        random.Random(f"{seed}:{family}").shuffle(prompts)
        out[family] = prompts[:n_per_family]
    return out


@hookimpl
def md_prompt_family_generators() -> list:
    from builtin_plugins.organisms.generators import builtin_generators

    return list(builtin_generators().values())


_CACHE_HELP = ("Organism cache (default: organisms/ under $MD_CACHE_DIR, else the user cache"
               " directory; see md_framework.cache.default_cache_dir).")


def _organism_cache(flag: str | None) -> Path:
    from md_framework.cache import default_cache_dir

    return Path(flag).expanduser().absolute() if flag else default_cache_dir() / "organisms"


@hookimpl
def md_register_commands(cli: Any) -> None:
    import click

    @cli.group("organism")
    def organism() -> None:
        """Model organisms with planted behaviour changes."""

    @organism.command("build")
    @click.argument("spec", nargs=-1, required=True)
    @click.option("--cache-dir", default=None, help=_CACHE_HELP)
    @click.option("--threads", default=2, show_default=True, type=int)
    @click.option("--remeasure", is_flag=True,
                  help="Measure a built organism's ground truth again (after a metric changed); "
                       "the models are not retrained.")
    def build_cmd(spec: tuple[str, ...], cache_dir: str, threads: int, remeasure: bool) -> None:
        """Build SPEC (a YAML file or builtin name) and print where its artefacts are."""
        from builtin_plugins.organisms.build import build_organism, remeasure_organism

        cache_dir = _organism_cache(cache_dir)
        for ref in spec:
            if remeasure:
                import torch

                torch.set_num_threads(threads)
                built = remeasure_organism(ref, cache_dir, log=click.echo)
            else:
                built = build_organism(ref, cache_dir, threads=threads, log=click.echo)
            gt = built.ground_truth()
            click.echo(json.dumps({
                "organism": built.name, "cached": built.cached, "root": str(built.root),
                "base": str(built.base_dir), "intervention": str(built.intervention_dir),
                "build_seconds": built.build_seconds,
                "planted": {p["id"]: {"family": p["family"], "metric": p["primary_metric"],
                                      "delta": p["measured_delta"]} for p in gt["planted"]},
            }, indent=2))

    @organism.command("universe")
    @click.argument("spec")
    def universe_cmd(spec: str) -> None:
        """Print the prompt families a method may test (no planted information)."""
        from builtin_plugins.organisms.build import load_universe

        click.echo(json.dumps(load_universe(spec), indent=2))

    @cli.command("bench")
    @click.argument("specs", nargs=-1, required=True)
    @click.option("--seeds", default=1, show_default=True, type=int)
    @click.option("--first-seed", default=0, show_default=True, type=int,
                  help="seeds run are first-seed .. first-seed + seeds - 1")
    @click.option("--out", "out_dir", default="bench-results", show_default=True)
    @click.option("--cache-dir", default=None, help=_CACHE_HELP)
    @click.option("--methods", default="pipeline,exhaustive,sequential,bandit,output-screen",
                  show_default=True,
                  help="comma-separated: pipeline, pipeline-internal, pipeline-output, "
                       "exhaustive, sequential, bandit, output-screen, adl, "
                       "pipeline-crosscoder, pipeline-circuit-tracer")
    @click.option("--alpha", default=0.05, show_default=True, type=float)
    @click.option("--n-prompts", default=12, show_default=True, type=int,
                  help="prompts per family x metric arm (fixed-n designs)")
    @click.option("--metrics", default=None,
                  help="comma-separated behaviour metrics (default: every registered one)")
    @click.option("--threads", default=2, show_default=True, type=int)
    @click.option("--relevance", type=click.Choice(["gate", "shifted"]), default="gate",
                  show_default=True,
                  help="fixed-n baselines: min_change as p := 1 when the estimate is below "
                       "it (gate, as the ground truth) or a test of |mean| <= min_change "
                       "(shifted, as the pipeline's validator; exact for 0/1 metrics)")
    @click.option("--no-plots", is_flag=True, help="write no plots next to bench.json")
    @click.option("--pipeline-config", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="analysis config (YAML/TOML) for the pipeline method; its models and "
                       "universe are replaced by each organism's")
    @click.option("--dictionary-config", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="YAML/JSON mapping {crosscoder: {...}, transcoders: {...}}: training "
                       "options of the dictionaries pipeline-crosscoder / pipeline-circuit-tracer "
                       "train (default: the toy's settings on the toy, the training commands' "
                       "defaults on other models)")
    def bench_cmd(specs, seeds, first_seed, out_dir, cache_dir, methods, alpha, n_prompts,
                  metrics, threads, relevance, no_plots, pipeline_config, dictionary_config) -> None:
        """Run discovery methods on organisms and judge them by measured ground truth."""
        from builtin_plugins.organisms.bench import DEFAULT_PIPELINE, BenchConfig, run_bench

        overrides = dict(DEFAULT_PIPELINE)
        if pipeline_config is not None:
            from md_framework.config import read_config_file

            overrides = read_config_file(pipeline_config)
            replaced = sorted({"base_model", "intervention_model", "universe", "cache_dir"} & set(overrides))
            if replaced:
                click.echo(f"[bench] --pipeline-config: {', '.join(replaced)} replaced by each "
                           "organism's", err=True)
            overrides = {k: v for k, v in overrides.items() if k not in replaced}
        config = BenchConfig(specs=list(specs), seeds=seeds, first_seed=first_seed,
                             out_dir=Path(out_dir), cache_dir=_organism_cache(cache_dir),
                             methods=[m.strip() for m in methods.split(",") if m.strip()],
                             alpha=alpha, n_prompts=n_prompts,
                             metrics=[m.strip() for m in metrics.split(",")] if metrics else None,
                             threads=threads, plots=not no_plots, relevance=relevance,
                             pipeline_overrides=overrides,
                             dictionaries=_dictionary_options(dictionary_config))
        result = run_bench(config, log=click.echo)
        click.echo(result["markdown"])


def _dictionary_options(path: str | None) -> dict[str, Any]:
    """``--dictionary-config``: a mapping of dictionary kind to training options."""
    from md_framework.config import read_config_file
    from md_framework.errors import ConfigError

    if path is None:
        return {}
    data = read_config_file(path)
    bad = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if bad:
        raise ConfigError(f"{path}: each kind maps to a mapping of training options; "
                          f"got {sorted(bad)} with other values")
    return data
