"""``md trace``, ``md transcoders train`` and ``md crosscoders train`` (pluggy plugin
``tracing-commands``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from md_framework import hookimpl


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def _cache_root(flag: Path | None) -> Path:
    """--cache-dir if given, else $MD_CACHE_DIR, else the user cache directory."""
    from md_framework.cache import default_cache_dir

    return Path(flag).expanduser().absolute() if flag is not None else default_cache_dir()


def _parse_layers(text: str | None, n_layers: int) -> list[int] | None:
    if text is None or text.strip().lower() in {"", "all"}:
        return None
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            layers.extend(range(int(lo), int(hi) + 1))
        elif part:
            layers.append(int(part))
    return layers


@hookimpl
def md_register_commands(cli: click.Group) -> None:
    from md_framework.cli import MDGroup

    @cli.command("trace")
    @click.option("--model", "source", required=True, help="Model source (toy, smollm2-135m-instruct, dir, .gguf, org/name).")
    @click.option("--adapter", default=None, help="PEFT/LoRA adapter directory.")
    @click.option("--tracer", "tracer_name", default="circuit-tracer", show_default=True)
    @click.option("--transcoders", default=None, help="circuit-tracer: transcoder directory, 'toy' or a hub name.")
    @click.option("--sae", "sae_path", default=None, help="sae tracer: SAE directory or release/id.")
    @click.option("--prompt", required=True)
    @click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the CircuitGraph JSON here.")
    @click.option("--option", "extra", multiple=True, help="Extra tracer option KEY=VALUE (JSON value).")
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Artefact cache (default: $MD_CACHE_DIR, else the user cache directory).")
    @click.option("--threads", type=int, default=2, show_default=True)
    def trace_cmd(source: str, adapter: str | None, tracer_name: str, transcoders: str | None,
                  sae_path: str | None, prompt: str, out: Path | None, extra: tuple[str, ...],
                  cache_dir: Path, threads: int) -> None:
        """Trace one PROMPT on one model offline; print counts and the replacement score."""
        from md_framework.drivers import load_driver_class
        from md_framework.runtime import ModelLoadOptions, ModelSpec

        from md_framework.tracing import load_model  # every loader plugin: organism: refs too

        _threads(threads)
        cache_dir = _cache_root(cache_dir)
        tracer_cls = load_driver_class("tracer", tracer_name)
        options: dict[str, Any] = {}
        if "cache_dir" in getattr(tracer_cls.Options, "model_fields", {}):
            options["cache_dir"] = str(cache_dir)
        if transcoders:
            options["transcoders"] = transcoders
        if sae_path:
            options["saes"] = [sae_path]
        for item in extra:
            key, _, value = item.partition("=")
            try:
                options[key] = json.loads(value)
            except json.JSONDecodeError:
                options[key] = value
        t0 = time.time()
        loaded = load_model(ModelSpec(source=source, adapter=adapter),
                            ModelLoadOptions(cache_dir=cache_dir))
        tracer = tracer_cls(options=options)
        t1 = time.time()
        graph = tracer.trace(loaded, [prompt])[0]
        t2 = time.time()
        n_feat = len(graph.feature_nodes())
        f = graph.faithfulness
        click.echo(f"model {loaded.model_id[:24]}  tracer {tracer_name}  dictionary {graph.dictionary_id}")
        click.echo(f"tokens {len(graph.input_token_ids)}  nodes {len(graph.nodes)} "
                   f"(features {n_feat})  edges {len(graph.edges)}")
        if f.replacement_score is not None:
            click.echo(f"replacement score {f.replacement_score:.3f}  completeness "
                       f"{f.completeness_score:.3f}  error-node share {f.error_node_share:.3f}")
        if graph.logit_targets:
            click.echo("top logits: " + ", ".join(f"{t.token!r} {t.probability:.3f}" for t in graph.logit_targets[:5]))
        click.echo(f"load {t1 - t0:.1f}s  trace {t2 - t1:.1f}s")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(graph.model_dump_json(indent=1))
            click.echo(f"wrote {out}")

    @cli.group("transcoders", cls=MDGroup)
    def transcoders_group() -> None:
        """Train and inspect per-layer transcoders."""

    @transcoders_group.command("train")
    @click.option("--model", "source", required=True)
    @click.option("--layers", default="all", show_default=True, help="e.g. all, 0-5, 1,3,7")
    @click.option("--d-sae", type=int, default=4608, show_default=True)
    @click.option("--k", type=int, default=32, show_default=True)
    @click.option("--kind", type=click.Choice(["batchtopk", "topk"]), default="batchtopk", show_default=True)
    @click.option("--tokens", type=int, default=100_000, show_default=True)
    @click.option("--epochs", type=int, default=1, show_default=True)
    @click.option("--batch-size", type=int, default=256, show_default=True)
    @click.option("--lr", type=float, default=1e-3, show_default=True)
    @click.option("--n-generate", type=int, default=32, show_default=True, help="Chat answers sampled from the model for the corpus.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--max-harvest-gb", type=float, default=8.0, show_default=True)
    @click.option("--out", type=click.Path(path_type=Path), required=True)
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Artefact cache (default: $MD_CACHE_DIR, else the user cache directory).")
    @click.option("--threads", type=int, default=2, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def transcoders_train(source: str, layers: str, d_sae: int, k: int, kind: str, tokens: int,
                          epochs: int, batch_size: int, lr: float, n_generate: int, seed: int,
                          max_harvest_gb: float, out: Path, cache_dir: Path, threads: int,
                          as_json: bool) -> None:
        """Harvest MLP in/out activations and train per-layer transcoders into OUT."""
        from md_framework.runtime import ModelLoadOptions, ModelSpec

        from md_framework.tracing import load_model  # every loader plugin: organism: refs too
        from builtin_plugins.tracers.transcoders import TrainConfig, report_table, train_transcoders

        _threads(threads)
        cache_dir = _cache_root(cache_dir)
        loaded = load_model(ModelSpec(source=source), ModelLoadOptions(cache_dir=cache_dir))
        cfg = TrainConfig(
            layers=_parse_layers(layers, loaded.model.config.num_hidden_layers), d_sae=d_sae, k=k,
            kind=kind, tokens=tokens, epochs=epochs, batch_size=batch_size, lr=lr,
            n_generate=n_generate, seed=seed, max_harvest_gb=max_harvest_gb)
        log = (lambda s: click.echo(s, err=True)) if as_json else click.echo
        report = train_transcoders(loaded.model, loaded.tokenizer, cfg, out,
                                   model_id=loaded.model_id, log=log)
        if as_json:
            click.echo(json.dumps(report, indent=2))
        else:
            click.echo(report_table(report))
            click.echo(f"dictionary {report['dictionary_id']} written to {out} "
                       f"({report['seconds']:.0f}s)")

    @cli.group("crosscoders", cls=MDGroup)
    def crosscoders_group() -> None:
        """Train BatchTopK crosscoders on a model pair (the crosscoder tracer's dictionary)."""

    @crosscoders_group.command("train")
    @click.option("--base", "base_source", required=True, help="Base model source.")
    @click.option("--intervention", "intervention_source", required=True, help="Intervention model source.")
    @click.option("--layers", default=None, help="e.g. 1 or 0,2 (default: the middle layer)")
    @click.option("--d-sae", type=int, default=512, show_default=True)
    @click.option("--k", type=int, default=16, show_default=True)
    @click.option("--tokens", type=int, default=50_000, show_default=True)
    @click.option("--epochs", type=int, default=4, show_default=True)
    @click.option("--lr", type=float, default=2e-3, show_default=True)
    @click.option("--n-samples", type=int, default=2048, show_default=True, help="Samples of both models for the corpus.")
    @click.option("--corpus", default="samples", show_default=True,
                  help="'+'-joined sources: samples (unprompted), chat (generic questions), "
                       "requests (public chat requests, harmful ones included), stdlib.")
    @click.option("--aux-k", type=int, default=0, show_default=True,
                  help="AuxK (Gao et al. 2024): dead latents per token trained on the main "
                       "reconstruction's error; 0 = off, d_model / 2 is the paper's scale.")
    @click.option("--free-latents", type=int, default=0, show_default=True,
                  help="Designated shared latents: all but this many latents get one tied decoder "
                       "for both models, so every difference passes through the free ones "
                       "(narrow fine-tunes); 0 = off.")
    @click.option("--k-free", type=int, default=None,
                  help="The free latents' own BatchTopK budget per token (with --free-latents; default 4).")
    @click.option("--delta-coef", type=float, default=None,
                  help="Weight of the delta loss on the reconstructed difference (with --free-latents; default 1).")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--out", type=click.Path(path_type=Path), default=None,
                  help="Output directory (default: content-addressed under CACHE_DIR/crosscoders).")
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=Path(".md-cache"), show_default=True)
    @click.option("--threads", type=int, default=2, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def crosscoders_train(base_source: str, intervention_source: str, layers: str | None,
                          d_sae: int, k: int, tokens: int, epochs: int, lr: float, n_samples: int,
                          corpus: str, aux_k: int, free_latents: int, k_free: int | None,
                          delta_coef: float | None, seed: int, out: Path | None, cache_dir: Path,
                          threads: int, as_json: bool) -> None:
        """Harvest both models' residual streams, train one crosscoder per layer, classify its
        latents (shared / base-only / intervention-only / changed) and print FVU per model."""
        from md_framework.runtime import ModelLoadOptions, ModelSpec
        from md_framework.tracing import load_model

        from builtin_plugins.tracers.crosscoder_train import (
            CORPUS_SOURCES, META_FILE, CrosscoderTrainConfig, ensure_crosscoder, report_table,
            train_crosscoders,
        )

        from pydantic import ValidationError

        from md_framework.config import format_validation_error
        from md_framework.errors import did_you_mean

        sources = corpus.split("+")
        for name in sources:
            if name not in CORPUS_SOURCES:
                raise click.BadParameter(f"unknown corpus source {name!r}"
                                         f"{did_you_mean(name, CORPUS_SOURCES)}",
                                         param_hint="--corpus")
        if not free_latents and (k_free is not None or delta_coef is not None):
            raise click.UsageError("--k-free and --delta-coef only apply with --free-latents > 0")
        grouped = {k_: v for k_, v in (("k_free", k_free), ("delta_coef", delta_coef)) if v is not None}
        _threads(threads)
        options = ModelLoadOptions(cache_dir=cache_dir)
        base = load_model(ModelSpec(source=base_source), options)
        intervention = load_model(ModelSpec(source=intervention_source), options)
        try:
            cfg = CrosscoderTrainConfig(
                layers=_parse_layers(layers, base.model.config.num_hidden_layers), d_sae=d_sae, k=k,
                tokens=tokens, epochs=epochs, lr=lr, n_samples=n_samples, corpus=sources,
                aux_k=aux_k, free_latents=free_latents, seed=seed, **grouped)
        except ValidationError as exc:
            raise click.UsageError(format_validation_error(exc, "crosscoder training options",
                                                           CrosscoderTrainConfig)) from None
        log = (lambda s: click.echo(s, err=True)) if as_json else click.echo
        if out is None:
            out = ensure_crosscoder(base, intervention, cfg, cache_dir, log=log)
            report = json.loads((out / META_FILE).read_text())
        else:
            report = train_crosscoders(base, intervention, cfg, out, log=log)
        if as_json:
            click.echo(json.dumps({**report, "path": str(out)}, indent=2))
        else:
            click.echo(report_table(report))
            click.echo(f"dictionary {report['dictionary_id']} in {out}")
