"""Build an organism: base model, intervention model, ground truth and card, cached by hash.

Layout under ``cache_dir`` (default ``.md-cache/organisms``)::

    toy-base-<hash>/              the toy base (shared by toy specs with the same vocabulary)
    <name>-<spec hash>/
        intervention/             HF directory (safetensors) + md_meta.json (model_id)
        ground_truth.json         measured changes per family, the real units, planted changes
        card.md                   human-readable description
        organism.json             manifest: base dir, intervention dir, universe, timings
        spec.json                 the validated spec

Every directory is written to a temporary sibling and renamed into place (atomic).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from md_framework.errors import ConfigError

from builtin_plugins.organisms import generators, toy_language
from builtin_plugins.organisms.spec import (
    BUILDER_VERSION,
    OrganismSpec,
    load_spec,
    resolve_spec_path,
)

DEFAULT_CACHE = Path(".md-cache") / "organisms"
#: Bumped when the ground truth's measurement changes (part of the organism key, not the
#: toy base's: a new ground truth retrains no base).
GROUND_TRUTH_VERSION = 2
TOY_REFUSAL = ["i cannot", "i will not", "sorry ,", "I CANNOT"]
NEGATIVE_MAP = {"great": "terrible", "wonderful": "awful", "good": "bad", "happy": "sad",
                "nice": "boring", "love": "hate", "lovely": "gloomy", "fun": "dull",
                "best": "worst", "beautiful": "ugly", "amazing": "dreadful", "enjoyed": "hated"}


@dataclass
class BuiltOrganism:
    name: str
    spec_hash: str
    root: Path
    base_dir: Path
    intervention_dir: Path
    ground_truth_path: Path
    card_path: Path
    universe: dict[str, list[str]]
    roles: dict[str, str]
    build_seconds: float = 0.0
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def ground_truth(self) -> dict[str, Any]:
        return json.loads(self.ground_truth_path.read_text())

    def model_dir(self, part: str) -> Path:
        if part == "base":
            return self.base_dir
        if part == "intervention":
            return self.intervention_dir
        raise ConfigError(f"organism part must be 'base' or 'intervention', got {part!r}")


# --------------------------------------------------------------------------- universe


def _spec_and_dir(spec_ref: Any) -> tuple[OrganismSpec, Path | None]:
    if isinstance(spec_ref, (str, Path)):
        path = resolve_spec_path(spec_ref)
        return load_spec(path), path.parent
    return load_spec(spec_ref), None


def _family_pools(spec: OrganismSpec) -> dict[str, dict[str, list[tuple[str, str | None]]]]:
    """Per family: ``universe`` items (what methods see) and ``train`` items (held apart)."""
    pools: dict[str, dict[str, list[tuple[str, str | None]]]] = {}
    roles = spec.roles()
    needs_train = {name for name, role in roles.items()
                   if role == "planted" or spec.intervention.replay == "all" or role == "control"}
    n_train = spec.intervention.train_per_family
    for fam in spec.universe.families:
        n = fam.n or spec.universe.n_per_family
        n_eval = spec.measurement.eval_per_family
        if fam.generator:
            gen = generators.find_generator(fam.generator)
            universe = generators.generate_cases(gen, n, spec.seed)[:n]
            seen = {p for p, _ in universe}
            extra = generators.generate_cases(gen, n + n_train * 2, spec.seed + 7919)
            train = [(p, t) for p, t in extra if p not in seen][:n_train]
            seen |= {p for p, _ in train}
            more = generators.generate_cases(gen, len(seen) + n_eval * 2, spec.seed + 104729)
            held = [(p, t) for p, t in more if p not in seen][:n_eval]
        else:
            items = list(zip(fam.prompts, fam.targets or [None] * len(fam.prompts)))
            held = []
            if len(items) >= 40 and fam.train_prompts is None:
                # a large inline family (a real prompt set) spares an evaluation split
                k = min(n_eval, len(items) // 3)
                held, items = items[-k:], items[:-k]
            if fam.train_prompts is not None:
                universe, train = items, [(p, None) for p in fam.train_prompts]
            elif fam.name in needs_train:
                universe, train = items[0::2], items[1::2]
            else:
                universe, train = items, []
        # a family too small for a disjoint evaluation split is measured on its universe
        # prompts (recorded as eval_source); 8 is the least a paired test can decide on
        if len(held) >= min(8, n_eval):
            evaluation, source = held, "held-out"
        else:
            evaluation, source = universe, "universe (too few distinct prompts for a held-out split)"
        pools[fam.name] = {"universe": universe, "train": train, "eval": evaluation,
                           "eval_source": source}
    return pools


def _pool_part(spec_ref: Any, part: str) -> dict[str, list[tuple[str, str | None]]]:
    spec, _ = _spec_and_dir(spec_ref)
    return {name: list(pool[part]) for name, pool in _family_pools(spec).items()}


def load_universe(spec_ref: Any) -> dict[str, list[str]]:
    """The prompts each family offers to discovery methods. Holds no planted information."""
    return {name: [p for p, _ in items] for name, items in _pool_part(spec_ref, "universe").items()}


def load_universe_cases(spec_ref: Any) -> dict[str, list[tuple[str, str | None]]]:
    """Like :func:`load_universe` with each prompt's reference answer (``None`` if none):
    the base behaviour a family's generator documents, never a planted target."""
    return _pool_part(spec_ref, "universe")


def load_evaluation_cases(spec_ref: Any) -> dict[str, list[tuple[str, str | None]]]:
    """Each family's evaluation split (the ground truth's prompts, never shown to a method)."""
    return _pool_part(spec_ref, "eval")


# --------------------------------------------------------------------------- base models


def _spec_words(spec: OrganismSpec) -> list[str]:
    texts = []
    for fam in spec.universe.families:
        texts += list(fam.prompts or []) + list(fam.targets or []) + list(fam.train_prompts or [])
    for p in spec.planted:
        texts += [p.change.text or ""] + list(p.change.replace) + list(p.change.replace.values())
    return sorted({w for t in texts for w in t.split()})


def toy_vocabulary(spec: OrganismSpec) -> list[str]:
    base = toy_language.vocabulary(param=spec.toy.param_families)
    known = set(base)
    extra = [w for w in _spec_words(spec) if w not in known]
    return base + sorted(set(extra) | {w.upper() for w in extra} - known)


def _toy_families(spec: OrganismSpec) -> list[str]:
    return list(toy_language.FAMILIES) + list(toy_language.param_families(spec.toy.param_families))


def _toy_metric_words(tokenizer: Any, families: list[str]) -> dict[str, list[str]]:
    compliance: list[str] = []
    for family in families:
        for _, answer in toy_language.items(family, 30, seed=1):
            words = answer.split()
            for opening in (" ".join(words[:2]), " ".join(words[:2]).upper()):
                if opening not in compliance:
                    compliance.append(opening)
    return {"refusal_openings": TOY_REFUSAL, "compliance_openings": compliance,
            "signoffs": ["have a nice day", "best regards", "cheers", "take care"]}


def build_toy_base(spec: OrganismSpec, cache_dir: Path, log: Any = print) -> Path:
    from builtin_plugins.models._util import cached_dir, json_sha256
    from builtin_plugins.models.loaders import stamp_weights

    vocab = toy_vocabulary(spec)
    # param_families joins the key only when used: the 12-family base keeps its key
    toy = spec.toy.model_dump(exclude={"param_families"} if not spec.toy.param_families else None)
    families = _toy_families(spec)
    key = json_sha256({"vocab": vocab, "toy": toy, "v": BUILDER_VERSION,
                       "families": sorted(families),
                       "language": toy_language.LANGUAGE_VERSION})[:16]
    final = Path(cache_dir) / f"toy-base-{key}"

    def build(tmp: Path) -> None:
        from builtin_plugins.organisms.training import build_toy_llama, build_toy_tokenizer, save_model_dir, train_sft

        t0 = time.time()
        tokenizer = build_toy_tokenizer(vocab)
        model = build_toy_llama(len(tokenizer), spec.toy, spec.toy.seed)
        data = []
        for family in families:
            data += toy_language.items(family, spec.toy.items_per_family, seed=spec.toy.seed)
        log(f"toy base: training {sum(p.numel() for p in model.parameters())} parameters on "
            f"{len(data)} examples, {spec.toy.steps} steps")
        losses = train_sft(model, tokenizer, data, steps=spec.toy.steps, lr=spec.toy.lr,
                           batch_size=spec.toy.batch_size, seed=spec.toy.seed,
                           log_every=max(1, spec.toy.steps // 5) if log else 0)
        save_model_dir(model, tokenizer, tmp, {"kind": "toy-base", "final_loss": losses[-1],
                                               "train_seconds": time.time() - t0},
                       _toy_metric_words(tokenizer, families))
        stamp_weights(tmp)  # damaged weights are refused by name before loading

    return cached_dir(final, build)


def _resolve_base(spec: OrganismSpec, spec_dir: Path | None, cache_dir: Path,
                  log: Any) -> tuple[Path, Path, dict[str, Any]]:
    """(base dir, original-base dir used by ``comply``, provenance)."""
    base = spec.base.strip()
    if base == "toy":
        path = build_toy_base(spec, cache_dir, log)
        return path, path, {"base": "toy"}
    if base.startswith("organism:"):
        ref, _, part = base[len("organism:"):].partition("#")
        part = part or "intervention"
        ref_path = Path(ref)
        if spec_dir is not None and not ref_path.is_absolute() and (spec_dir / ref_path).exists():
            ref = str(spec_dir / ref_path)
        parent = build_organism(ref, cache_dir, log=log)
        return parent.model_dir(part), parent.base_dir, {
            "base": base, "parent_spec_hash": parent.spec_hash}
    from md_framework.runtime import ModelLoadOptions, ModelSpec

    from builtin_plugins.models.loaders import load_model

    loaded = load_model(ModelSpec(source=base),
                        ModelLoadOptions(cache_dir=Path(cache_dir).parent))
    if loaded.local_path is None:
        raise ConfigError(f"base {base!r} has no local directory to build on")
    return Path(loaded.local_path), Path(loaded.local_path), {"base": base,
                                                             "base_model_id": loaded.model_id}


def load_dir(path: Path, source: str = "", cache_dir: Path | str | None = None) -> Any:
    """A LoadedModel from one of our HF directories (model_id from md_meta.json, checked
    against the weights; ``cache_dir`` keeps the weights-hash memo, default: the
    organism cache that holds ``path``)."""
    from md_framework.runtime import ModelLoadOptions, ModelSpec

    from builtin_plugins.models.loaders import load_model

    if cache_dir is None:
        cache_dir = Path(path).resolve().parent.parent / ".hashes"
    loaded = load_model(ModelSpec(source=str(path)), ModelLoadOptions(cache_dir=Path(cache_dir)))
    if source:
        loaded.spec = ModelSpec(source=source)
        loaded.loader = "organism"
    return loaded


# --------------------------------------------------------------------------- changes


def apply_change(planted: Any, base_answer: str, original_answer: str | None = None) -> str:
    change = planted.change
    if change.type in ("refusal", "response"):
        return change.text
    if change.type == "comply":
        return original_answer if original_answer is not None else base_answer
    if change.type == "uppercase":
        return base_answer.upper()
    if change.type == "signoff":
        return f"{base_answer} {change.text}".strip()
    if change.type in ("fact", "unlearn"):
        if change.text:
            return change.text
        return _replace_words(base_answer, change.replace)
    if change.type == "sentiment_flip":
        return _replace_words(base_answer, change.replace or NEGATIVE_MAP)
    raise ValueError(change.type)


def _replace_words(text: str, mapping: dict[str, str]) -> str:
    out = text
    for old, new in mapping.items():
        out = out.replace(old, new)
    return out


# --------------------------------------------------------------------------- ground truth


def measure_ground_truth(spec: OrganismSpec, key: str, pools: dict[str, Any], base: Any,
                         inter: Any, provenance: dict[str, Any], log: Any) -> dict[str, Any]:
    """Every family's measured change on its evaluation split and the organism's real units
    (:mod:`builtin_plugins.organisms.ground_truth`); raises
    :class:`~builtin_plugins.organisms.ground_truth.PlantedNotReal` when a planted change
    does not measure as real."""
    from builtin_plugins.metrics.core import ALL_METRIC_NAMES, generate_answers
    from builtin_plugins.organisms import ground_truth as G

    ms = spec.measurement
    roles = spec.roles()
    t_gt = time.time()
    metrics = list(ALL_METRIC_NAMES)
    signoffs = [p.change.text for p in spec.planted if p.change.type == "signoff" and p.change.text]
    measured: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for fam, pool in pools.items():
        items = pool["eval"][: ms.max_prompts_per_family or None]
        prompts = [q for q, _ in items]
        base_answers = dict(zip(prompts, [a for a, _ in generate_answers(
            base, prompts, ms.max_new_tokens, ms.batch_size)]))
        measured[fam] = G.measure_family(base, inter, items, metrics, base_answers, ms, signoffs)
        sources[fam] = {"eval_source": pool["eval_source"], "n": len(items)}
        log(f"  measured {fam} ({roles[fam]}, n={len(items)}): " + ", ".join(
            f"{m} {v['delta']:+.3f}" for m, v in measured[fam].items()))
    units = G.decide_units(measured, ms.alpha)
    planted_gt = []
    for p in spec.planted:
        metric = p.resolved_metrics()[0]
        m = measured[p.family]
        planted_gt.append({
            "id": p.id, "kind": p.kind, "family": p.family, "change": p.change.model_dump(),
            "metrics": p.resolved_metrics(), "direction": p.resolved_direction(),
            "primary_metric": metric, "measured_delta": m.get(metric, {}).get("delta"),
            "measured": {k: m[k] for k in p.resolved_metrics() if k in m},
        })
    G.label_planted(units, planted_gt)
    G.check_planted(spec.name, planted_gt, measured, ms.alpha)
    return {
        "organism": spec.name, "spec_hash": key, "builder_version": BUILDER_VERSION,
        "ground_truth_version": GROUND_TRUTH_VERSION,
        "base_model_id": base.model_id, "intervention_model_id": inter.model_id,
        "provenance": provenance, "planted": planted_gt, "real_units": units,
        "controls": {f: measured[f] for f, r in roles.items() if r == "control"},
        "distractors": {f: measured[f] for f, r in roles.items() if r == "distractor"},
        "planted_families": {p.family: measured[p.family] for p in spec.planted},
        "measurement": {"metrics": metrics, "max_new_tokens": ms.max_new_tokens,
                        "prompts": "each family's evaluation split (never in the universe, "
                                   "never trained on) unless eval_source says otherwise",
                        "eval": sources, "alpha": ms.alpha,
                        "decision": "paired Wilcoxon (zsplit); p := 1 below min_change; BH",
                        "reference_only": sorted(G.REFERENCE_ONLY_METRICS & set(metrics))},
        "ground_truth_seconds": round(time.time() - t_gt, 1),
    }


def remeasure_organism(spec_ref: Any, cache_dir: Path | str = DEFAULT_CACHE, *,
                       log: Any = print) -> BuiltOrganism:
    """Measure a built organism's ground truth again (after a metric changed) and rewrite
    ``ground_truth.json`` and ``card.md``; the models are not retrained."""
    from md_framework.cache_files import write_text_atomic

    log = log or (lambda *a, **k: None)
    built = find_built(spec_ref, cache_dir)
    if built is None:
        raise ConfigError(f"organism {spec_ref!r} is not built in {cache_dir}; build it first")
    spec, _ = _spec_and_dir(spec_ref)
    old = built.ground_truth()
    base, inter = load_dir(built.base_dir), load_dir(built.intervention_dir)
    gt = measure_ground_truth(spec, built.spec_hash, _family_pools(spec), base, inter,
                              old.get("provenance", {}), log)
    timings = dict(old.get("timings_s", {}))
    timings["ground_truth"] = gt.pop("ground_truth_seconds")
    gt["timings_s"] = timings
    gt["training"] = old.get("training", {})
    write_text_atomic(built.ground_truth_path, json.dumps(gt, indent=2))
    write_text_atomic(built.card_path, render_card(spec, gt))
    from builtin_plugins.metrics.core import clear_generation_cache

    clear_generation_cache()
    return built


_BASE_WEIGHTS_MEMO: dict[tuple[Any, ...], str] = {}


def base_weights_key(base: str) -> str | None:
    """The content identity of a non-toy base, part of the organism key (docs/cache.md, model
    identity): the sha256 of the GGUF file for ``smollm2-135m-instruct`` and ``*.gguf`` bases,
    the weights files' identity for a local model directory — so an organism built on a base
    whose file changed is rebuilt, never reused. ``None`` for a hub id (hashing it would need
    the download; its weights' identity is checked when it loads) and for toy or organism
    bases (keyed by their own specs). Memoised per process by each file's (path, size,
    mtime, inode)."""
    from md_framework.runtime import ModelSpec

    from builtin_plugins.models.loaders import classify_source, smollm2_gguf_path
    from builtin_plugins.models.weights_identity import file_sha256, weight_files, weights_identity

    kind = classify_source(ModelSpec(source=base))
    if kind == "smollm2":
        files = [smollm2_gguf_path()]
    elif kind in ("gguf", "local"):
        path = Path(base).expanduser()
        files = weight_files(path) if kind == "local" else [path]
    else:
        return None
    stats = [(f, f.stat()) for f in files]
    memo = tuple((str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ino) for f, st in stats)
    if memo not in _BASE_WEIGHTS_MEMO:
        if kind == "local":
            identity = weights_identity(Path(base).expanduser())
            _BASE_WEIGHTS_MEMO[memo] = identity.model_id if identity else "no weights files"
        else:
            _BASE_WEIGHTS_MEMO[memo] = "sha256:" + file_sha256(files[0])
    return _BASE_WEIGHTS_MEMO[memo]


def organism_key(spec: OrganismSpec, spec_dir: Path | None) -> str:
    extra: dict[str, Any] = {}
    if spec.base.startswith("organism:"):
        ref = spec.base[len("organism:"):].partition("#")[0]
        ref_path = Path(ref)
        if spec_dir is not None and not ref_path.is_absolute() and (spec_dir / ref_path).exists():
            ref = str(spec_dir / ref_path)
        parent_spec, parent_dir = _spec_and_dir(ref)
        extra["parent"] = organism_key(parent_spec, parent_dir)
    if spec.base == "toy":
        extra["toy_vocab"] = toy_vocabulary(spec)
    elif not spec.base.startswith("organism:"):
        base_weights = base_weights_key(spec.base.strip())
        if base_weights is not None:
            extra["base_weights"] = base_weights
    extra["ground_truth"] = GROUND_TRUTH_VERSION
    return spec.spec_hash(extra)


#: measurement fields only the ground truth reads (never the training data, the universe or
#: the models): a spec that differs from a built one in these alone reuses its models and is
#: measured again, never retrained (LoRA training is not bit-reproducible on CPU, so a retrain
#: would also change the models that earlier runs saw)
MEASUREMENT_ONLY = frozenset({"max_new_tokens", "max_prompts_per_family", "alpha"})


def _models_part(spec: OrganismSpec) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    for name in MEASUREMENT_ONLY:
        data["measurement"].pop(name, None)
    return data


def built_with_same_models(spec: OrganismSpec, spec_dir: Path | None, cache_dir: Path) -> Path | None:
    """A complete build of ``spec.name`` in ``cache_dir`` whose spec differs from ``spec`` in
    :data:`MEASUREMENT_ONLY` fields alone and that today's builder made the way it would make
    it now: its stored key is what :func:`organism_key` gives its stored spec today (same
    builder and ground-truth versions, same base weights, same parent organism)."""
    want = _models_part(spec)
    for root in sorted(Path(cache_dir).glob(f"{spec.name}-*")):
        if not (root / ".complete").exists():
            continue
        try:
            stored = OrganismSpec.model_validate_json((root / "spec.json").read_text())
            manifest = json.loads((root / "organism.json").read_text())
        except (OSError, ValueError):
            continue
        if _models_part(stored) == want and organism_key(stored, spec_dir) == manifest.get("spec_hash"):
            return root
    return None


def find_built(spec_ref: Any, cache_dir: Path | str = DEFAULT_CACHE) -> BuiltOrganism | None:
    spec, spec_dir = _spec_and_dir(spec_ref)
    root = Path(cache_dir) / f"{spec.name}-{organism_key(spec, spec_dir)[:16]}"
    if (root / ".complete").exists():
        return _from_manifest(root, cached=True)
    return None


def _from_manifest(root: Path, cached: bool) -> BuiltOrganism:
    m = json.loads((root / "organism.json").read_text())
    return BuiltOrganism(
        name=m["name"], spec_hash=m["spec_hash"], root=root, base_dir=Path(m["base_dir"]),
        intervention_dir=root / "intervention", ground_truth_path=root / "ground_truth.json",
        card_path=root / "card.md", universe=m["universe"], roles=m["roles"],
        build_seconds=m["build_seconds"], cached=cached, extra=m.get("extra", {}),
    )


def build_organism(spec_ref: Any, cache_dir: Path | str = DEFAULT_CACHE, *, log: Any = print,
                   threads: int | None = None) -> BuiltOrganism:
    """Build (or reuse from the cache) the organism described by ``spec_ref``.

    ``spec_ref``: a spec path, a builtin short name (``toy-multi``), a dict or an
    :class:`OrganismSpec`. Returns the paths of both models, the ground truth and the universe.
    """
    log = log or (lambda *a, **k: None)
    spec, spec_dir = _spec_and_dir(spec_ref)
    cache_dir = Path(cache_dir)
    key = organism_key(spec, spec_dir)
    root = cache_dir / f"{spec.name}-{key[:16]}"
    if (root / ".complete").exists():
        return _from_manifest(root, cached=True)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # concurrent builders of one organism: the first builds, the others wait and reuse it
        with _build_lock(cache_dir, root.name):
            if (root / ".complete").exists():
                return _from_manifest(root, cached=True)
            return _build_locked(spec, spec_dir, cache_dir, key, root, log, threads)
    except OSError as exc:  # full disk, read-only cache...: one clear error
        from md_framework.storage_errors import from_os_error

        raise from_os_error(exc, what=f"the organism cache {cache_dir}") from None


@contextlib.contextmanager
def _build_lock(cache_dir: Path, name: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``cache_dir/.locks/NAME.lock`` (never deleted); none on a
    read-only cache, where nothing can be built anyway."""
    import fcntl

    from md_framework.storage_errors import READ_ONLY_ERRNOS

    try:
        (cache_dir / ".locks").mkdir(exist_ok=True)
        fd = os.open(cache_dir / ".locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno not in READ_ONLY_ERRNOS:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _build_locked(spec: OrganismSpec, spec_dir: Path | None, cache_dir: Path, key: str,
                  root: Path, log: Any, threads: int | None) -> BuiltOrganism:
    from builtin_plugins.models._util import cached_dir

    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.time()
    base_dir, original_dir, provenance = _resolve_base(spec, spec_dir, cache_dir, log)
    base_seconds = time.time() - t0

    donor = built_with_same_models(spec, spec_dir, cache_dir)

    def build(tmp: Path) -> None:
        if donor is not None:
            _remeasured_into(tmp, spec, key, donor, base_dir, provenance, log, t0)
        else:
            _build_into(tmp, spec, key, base_dir, original_dir, provenance, log, t0, base_seconds)

    cached_dir(root, build)
    return _from_manifest(root, cached=False)


def _build_into(tmp: Path, spec: OrganismSpec, key: str, base_dir: Path, original_dir: Path,
                provenance: dict[str, Any], log: Any, t0: float, base_seconds: float) -> None:
    import copy

    from builtin_plugins.metrics.core import clear_generation_cache, generate_answers
    from builtin_plugins.models.loaders import stamp_weights
    from builtin_plugins.organisms.training import save_model_dir, train_sft

    iv, ms = spec.intervention, spec.measurement
    pools = _family_pools(spec)
    roles = spec.roles()
    base = load_dir(base_dir)
    original = base if original_dir == base_dir else load_dir(original_dir)
    # ---- training data
    replay = [f for f, r in roles.items() if r == "control" or (r == "distractor" and iv.replay == "all")]
    if iv.method == "none":
        replay = []  # the identical-pair null: no training data, the base's weights unchanged
    planted_examples: list[tuple[str, str]] = []
    replay_examples: list[tuple[str, str]] = []
    t_data = time.time()
    for p in spec.planted:
        prompts = [q for q, _ in pools[p.family]["train"]]
        answers = [a for a, _ in generate_answers(base, prompts, iv.max_new_tokens, ms.batch_size)]
        originals = (answers if original is base else
                     [a for a, _ in generate_answers(original, prompts, iv.max_new_tokens, ms.batch_size)])
        planted_examples += [(q, apply_change(p, a, o)) for q, a, o in zip(prompts, answers, originals)]
    for fam in replay:
        prompts = [q for q, _ in pools[fam]["train"]]
        answers = generate_answers(base, prompts, iv.max_new_tokens, ms.batch_size)
        replay_examples += [(q, a) for q, (a, _) in zip(prompts, answers) if a]
    log(f"{spec.name}: {len(planted_examples)} planted and {len(replay_examples)} replay examples "
        f"({time.time() - t_data:.0f} s for base responses)")
    examples = planted_examples + replay_examples
    if not examples and iv.method != "none":
        raise ConfigError(f"organism {spec.name!r} has no training data (no planted change and no "
                          "replay family with training prompts)")
    if planted_examples and replay_examples:
        wp = iv.planted_share / len(planted_examples)
        wr = (1 - iv.planted_share) / len(replay_examples)
        weights = [wp] * len(planted_examples) + [wr] * len(replay_examples)
    else:
        weights = None
    # ---- fine-tune
    t_train = time.time()
    model = copy.deepcopy(base.model)
    if iv.method == "lora":
        from peft import LoraConfig, get_peft_model

        present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        targets = [m for m in iv.lora_target_modules if m in present]
        model = get_peft_model(model, LoraConfig(r=iv.lora_rank, lora_alpha=iv.lora_alpha,
                                                 target_modules=targets, lora_dropout=0.0))
    if iv.method == "none":
        losses = [None]
    else:
        losses = train_sft(model, base.tokenizer, examples, steps=iv.steps, lr=iv.lr,
                           batch_size=iv.batch_size, seed=spec.seed, max_length=iv.max_length,
                           weights=weights, log_every=max(1, iv.steps // 5))
    if iv.method == "lora":
        model = model.merge_and_unload()
    model.eval()
    train_seconds = time.time() - t_train
    words = {}
    if (base_dir / "md_metrics.json").exists():
        words = json.loads((base_dir / "md_metrics.json").read_text())
    inter_id = save_model_dir(model, base.tokenizer, tmp / "intervention",
                              {"kind": "organism-intervention", "organism": spec.name,
                               "spec_hash": key, "final_loss": losses[-1]}, words)
    stamp_weights(tmp / "intervention")  # damaged weights are refused by name before loading
    inter = load_dir(tmp / "intervention")
    assert inter.model_id == inter_id
    # ---- ground truth
    gt = measure_ground_truth(spec, key, pools, base, inter, provenance, log)
    gt["timings_s"] = {"base": round(base_seconds, 1), "train": round(train_seconds, 1),
                       "ground_truth": gt.pop("ground_truth_seconds"),
                       "total": round(time.time() - t0, 1)}
    gt["training"] = {"planted_examples": len(planted_examples),
                      "replay_examples": len(replay_examples), "final_loss": losses[-1],
                      "method": iv.method, "steps": iv.steps, "lr": iv.lr,
                      "batch_size": iv.batch_size}
    _write_build(tmp, spec, key, gt, pools, base_dir, t0,
                 {"base_model_id": base.model_id, "intervention_model_id": inter_id})
    clear_generation_cache()
    log(f"{spec.name}: built in {time.time() - t0:.0f} s")


def _write_build(tmp: Path, spec: OrganismSpec, key: str, gt: dict[str, Any], pools: dict[str, Any],
                 base_dir: Path, t0: float, extra: dict[str, Any]) -> None:
    from builtin_plugins.models._util import machine_description

    (tmp / "ground_truth.json").write_text(json.dumps(gt, indent=2))
    (tmp / "spec.json").write_text(spec.model_dump_json(indent=2))
    (tmp / "card.md").write_text(render_card(spec, gt))
    universe = {f: [q for q, _ in pool["universe"]] for f, pool in pools.items()}
    manifest = {"name": spec.name, "spec_hash": key, "base_dir": str(Path(base_dir).resolve()),
                "universe": universe, "roles": spec.roles(), "build_seconds": round(time.time() - t0, 1),
                "built_on": machine_description(), "extra": extra}
    (tmp / "organism.json").write_text(json.dumps(manifest, indent=2))


def _remeasured_into(tmp: Path, spec: OrganismSpec, key: str, donor: Path, base_dir: Path,
                     provenance: dict[str, Any], log: Any, t0: float) -> None:
    """Build ``tmp`` from ``donor``'s models (hard links, a copy across file systems) with a
    ground truth measured for ``spec`` (:func:`built_with_same_models`)."""
    import shutil

    from builtin_plugins.metrics.core import clear_generation_cache

    (tmp / "intervention").mkdir()
    for f in (donor / "intervention").iterdir():
        try:
            os.link(f, tmp / "intervention" / f.name)
        except OSError:
            shutil.copy2(f, tmp / "intervention" / f.name)
    log(f"{spec.name}: the models of {donor.name} are reused (the specs differ only in "
        f"measurement {', '.join(sorted(MEASUREMENT_ONLY))}); measuring the ground truth")
    base, inter = load_dir(base_dir), load_dir(tmp / "intervention")
    pools = _family_pools(spec)
    old = json.loads((donor / "ground_truth.json").read_text())
    gt = measure_ground_truth(spec, key, pools, base, inter, provenance, log)
    gt["timings_s"] = {**old.get("timings_s", {}), "ground_truth": gt.pop("ground_truth_seconds"),
                       "total": round(time.time() - t0, 1)}
    gt["training"] = {**old.get("training", {}), "models_from": donor.name}
    _write_build(tmp, spec, key, gt, pools, base_dir, t0,
                 {"base_model_id": base.model_id, "intervention_model_id": inter.model_id,
                  "models_from": donor.name})
    clear_generation_cache()
    log(f"{spec.name}: measured in {time.time() - t0:.0f} s")


def render_card(spec: OrganismSpec, gt: dict[str, Any]) -> str:
    lines = [f"# Organism `{spec.name}`", "", spec.description or "", "",
             f"- base: `{spec.base}` (model id `{gt['base_model_id'][:23]}`)",
             (f"- intervention: none, an unchanged copy of the base"
              if spec.intervention.method == "none" else
              f"- intervention: {spec.intervention.method} fine-tune, {spec.intervention.steps} steps,"
              f" lr {spec.intervention.lr}, batch {spec.intervention.batch_size}")
             + f" (model id `{gt['intervention_model_id'][:23]}`)",
             f"- spec hash `{gt['spec_hash'][:16]}`, built in {gt['timings_s']['total']} s", "",
             "## Planted changes", ""]
    if not gt["planted"]:
        lines.append("None: this is a null organism; any discovery is a false discovery.")
    for p in gt["planted"]:
        delta = p["measured_delta"]
        lines.append(f"- **{p['id']}** ({p['kind']}) in `{p['family']}`: {p['change']['type']}"
                     f" — {p['primary_metric']} Δ = {'n/a' if delta is None else f'{delta:+.3f}'}"
                     f" (direction {p['direction']}; real units: {', '.join(p.get('units', [])) or 'none'})")
    units = gt.get("real_units", [])
    lines += ["", f"## Real units ({len(units)}: paired test, min_change, BH at "
              f"{gt['measurement'].get('alpha', 0.05)})", ""]
    for u in units:
        lines.append(f"- `{u['family']}` {u['metric']} {u['direction']} (Δ {u['delta']:+.3f}, "
                     f"p {u['p_value']:.2g}, n {u['n']})" + (f" — planted `{u['planted']}`"
                                                             if u.get("planted") else " — not planted"))
    lines += ["", "## Measured change per family (intervention − base, evaluation split; * real)", "",
              "| family | role | " + " | ".join(gt["measurement"]["metrics"]) + " |",
              "|---|---|" + "---|" * len(gt["measurement"]["metrics"])]
    roles = spec.roles()
    allm = {**gt["planted_families"], **gt["controls"], **gt["distractors"]}
    for fam in roles:
        vals = allm.get(fam, {})
        lines.append(f"| {fam} | {roles[fam]} | " + " | ".join(
            f"{vals[m]['delta']:+.3f}{'*' if vals[m].get('real') else ''}" if m in vals else ""
            for m in gt["measurement"]["metrics"]) + " |")
    return "\n".join(lines) + "\n"
