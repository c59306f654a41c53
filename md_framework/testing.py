"""A kit for plugin authors: pytest fixtures and helpers, shipped with md-framework.

Registered as a ``pytest11`` plugin, so with md-framework installed every test session has
these fixtures (no import needed); switch them off with ``pytest -p no:md_framework``.

Fixtures
--------
* ``md_hooks`` — a factory: ``md_hooks(my_plugin)`` returns a :class:`~md_framework.plugins.Hooks`
  runner over a *fresh* plugin manager holding only your plugin (no entry-point scanning);
  ``md_hooks(my_plugin, builtins=True)`` adds md-framework's own plugins (the hypothesis
  templates, the builtin types), to see what your patterns become.
* ``md_synthetic_diff`` — a factory for a synthetic :class:`~md_framework.types.CircuitDiff`
  (:func:`synthetic_circuit_diff`): one planted family-specific change in features and in
  the top next token, plus noise features, with per-prompt data. No model, no torch.
* ``md_tiny_model_pair`` — the builtin toy model and its knowledge-edited variant
  (``toy`` / ``toy:edited``), loaded through the ``md_load_model`` hook like any model; built
  once and cached (``MD_TEST_CACHE``, else a session temporary directory). Needs torch.
* ``md_installed`` — a pytester-like helper for installed distributions
  (:class:`InstalledDistributions`): pip-installs projects into a private directory, so the
  kernel discovers their entry points exactly as it discovers any installed distribution,
  and runs ``md`` or Python against them, while the test's own environment stays untouched.

Helpers: :func:`plugin_hooks`, :func:`discover_with` (the whole discovery stage over your
plugins and the builtins), :func:`synthetic_circuit_diff`, :func:`make_change`. Detector
helpers (the exploratory screen, the families a change affects) are in
:mod:`md_framework.detector_api`.

The kernel rule holds here: nothing imports ``builtin_plugins``; the builtins come through
their entry points, models through the ``md_load_model`` hook.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

if TYPE_CHECKING:  # md_framework is imported lazily: a pytest11 plugin loads before conftest
    from md_framework.config import AnalysisConfig
    from md_framework.plugins import Hooks
    from md_framework.runtime import LoadedModel
    from md_framework.types import CircuitDiff, DiscoveryResult, SystematicChange

__all__ = ["InstalledDistributions", "ModelPair", "discover_with", "make_change", "plugin_hooks",
           "synthetic_circuit_diff"]

PluginArg = Any  # a module or object with hookimpls, or a (name, plugin) pair


# --------------------------------------------------------------------------- hooks


def _named(plugins: Sequence[PluginArg]) -> list[tuple[str, Any]]:
    out = []
    for plugin in plugins:
        if isinstance(plugin, tuple) and len(plugin) == 2 and isinstance(plugin[0], str):
            out.append(plugin)
        else:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            out.append((name.rsplit(".", 1)[-1].replace("_", "-"), plugin))
    return out


def plugin_hooks(*plugins: PluginArg, builtins: bool = False) -> Hooks:
    """A :class:`~md_framework.plugins.Hooks` runner over a fresh plugin manager holding
    ``plugins`` (modules or objects with hookimpls, or ``(name, plugin)`` pairs; a bare
    module is named after its last dotted part), the essential stage plugins (they
    implement only ``md_stage_*`` hooks, so no contribute-all hook hears from them) and,
    with ``builtins``, md-framework's other plugins. Third-party entry points are never
    scanned."""
    from md_framework.plugins import Hooks, get_plugin_manager

    pm = get_plugin_manager(autoload=False, builtins=builtins, extra_plugins=_named(plugins))
    return Hooks(pm)


def discover_with(diff: CircuitDiff, *plugins: PluginArg, config: AnalysisConfig | None = None,
                  context: Mapping[str, Any] | None = None) -> DiscoveryResult:
    """The discovery stage (interpret, detect patterns, form, rank, floor and cap
    hypotheses) over ``plugins`` and the builtins: what an analysis would test, what it
    would drop and why (``.dropped``), and which pattern types no plugin declares."""
    from md_framework.runtime import InterpretationContext

    hooks = plugin_hooks(*plugins, builtins=True)
    return hooks.stage("md_stage_discover", hooks=hooks, diff=diff, config=config,
                       context=InterpretationContext.of(context))


# --------------------------------------------------------------------------- synthetic diff


def make_change(layer: int, feature: int, mean_delta: float, q: float,
                families: Mapping[str, float], n_prompts: int = 8) -> SystematicChange:
    """A :class:`~md_framework.types.SystematicChange` with p = q (for hand-built diffs)."""
    from md_framework.types import FeatureRef, SystematicChange

    return SystematicChange(feature=FeatureRef(layer=layer, feature=feature), mean_delta=mean_delta,
                            n_prompts=n_prompts, p_value=q, q_value=q, families=dict(families))


def synthetic_circuit_diff(*, families: Sequence[str] = ("harmful", "weather", "math"),
                           changed_family: str = "harmful", n_prompts: int = 6,
                           delta: float = -1.0, flip_token: str | None = "sorry",
                           seed: int = 0) -> CircuitDiff:
    """A small :class:`~md_framework.types.CircuitDiff` with one planted change.

    On ``changed_family`` two features (layers 2 and 3) move by ``delta`` and the top next
    token moves from ``sure`` to ``flip_token`` (``None``: the base's top token only loses
    probability); three noise features move a little everywhere and do not pass the
    exploratory screen. ``systematic_changes`` carry per-family means and q-values;
    ``prompt_diffs`` carry the matching feature activations and logit targets, so both
    screen-based and output-based detectors have something to read. Deterministic in
    ``seed``."""
    import random

    from md_framework.types import CircuitDiff, FeatureChange, LogitTarget, PromptDiff

    if changed_family not in families:
        raise ValueError(f"changed_family {changed_family!r} is not one of {list(families)}")
    rng = random.Random(seed)
    planted = [(2, 11), (3, 7)]
    noise = [(1, 40), (2, 41), (4, 42)]
    prompt_diffs = []
    for family in families:
        hit = family == changed_family
        for i in range(n_prompts):
            changes = []
            for layer, feat in planted + noise:
                base = 1.0 + rng.uniform(-0.05, 0.05)
                if (layer, feat) in planted:
                    # exactly still off the family: the builtin family contrast calls a family
                    # whose mean moved by noise in the contrast's direction "specific" at
                    # share 0.5 (its threshold), which would blur the planted answer
                    moved = delta if hit else 0.0
                else:
                    moved = rng.uniform(-0.05, 0.05)
                changes.append(FeatureChange(
                    node_id=f"F:{layer}:0:{feat}", layer=layer, position=0, feature=feat,
                    base_activation=base, intervention_activation=max(0.0, base + moved),
                    status="shared"))
            base_top = [LogitTarget(token_id=1, token="sure", probability=0.8),
                        LogitTarget(token_id=2, token="sorry", probability=0.1)]
            if hit and flip_token is not None:
                inter_top = [LogitTarget(token_id=2, token=flip_token, probability=0.75),
                             LogitTarget(token_id=1, token="sure", probability=0.1)]
            elif hit:
                inter_top = [LogitTarget(token_id=1, token="sure", probability=0.45),
                             LogitTarget(token_id=2, token="sorry", probability=0.3)]
            else:
                p = 0.8 + rng.uniform(-0.02, 0.02)
                inter_top = [LogitTarget(token_id=1, token="sure", probability=p),
                             LogitTarget(token_id=2, token="sorry", probability=0.1)]
            prompt_diffs.append(PromptDiff(prompt=f"{family} prompt {i}", family=family,
                                           feature_changes=changes, base_logit_targets=base_top,
                                           intervention_logit_targets=inter_top))
    share = 1.0 / len(families)
    systematic = [make_change(layer, feat, delta * share, 1e-3,
                              {f: (delta if f == changed_family else 0.0) for f in families},
                              n_prompts * len(families)) for layer, feat in planted]
    systematic += [make_change(layer, feat, 0.01 * (k + 1), 0.6, {f: 0.01 for f in families},
                               n_prompts * len(families)) for k, (layer, feat) in enumerate(noise)]
    return CircuitDiff(base_model_id="synthetic-base", intervention_model_id="synthetic-intervention",
                       systematic_changes=systematic, prompt_diffs=prompt_diffs)


# --------------------------------------------------------------------------- models


class ModelPair(NamedTuple):
    base: LoadedModel
    intervention: LoadedModel


def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("MD_TEST_CACHE")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("md-cache")


def load_tiny_model_pair(cache_dir: Path) -> ModelPair:
    """The toy model (``toy``) and its knowledge edit (``toy:edited``: "the capital of japan
    is" -> "lima"), through the ``md_load_model`` hook of the installed model loaders."""
    from md_framework.plugins import get_plugin_manager
    from md_framework.runtime import ModelLoadOptions, ModelSpec
    from md_framework.tracing import load_model

    pm = get_plugin_manager(autoload=False)
    options = ModelLoadOptions(cache_dir=cache_dir)
    return ModelPair(load_model(ModelSpec(source="toy"), options, pm),
                     load_model(ModelSpec(source="toy:edited"), options, pm))


# --------------------------------------------------------------------------- installed dists


class InstalledDistributions:
    """Install projects into a private ``site`` directory and run against them.

    ``pip install --target`` writes real ``*.dist-info`` directories with
    ``entry_points.txt``; ``run_md``/``run_python`` put ``site`` first on ``PYTHONPATH`` with
    plugin autoloading on, and :meth:`activated` does the same in-process for the duration
    of a ``with`` block."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.site = self.root / "site"
        self.site.mkdir(parents=True, exist_ok=True)

    def make_project(self, name: str, modules: Mapping[str, str],
                     entry_points: Mapping[str, Mapping[str, str]]) -> Path:
        """Write a setuptools project ``name`` (``src/`` layout) with ``modules`` (relative
        path -> source, dedented) and ``entry_points`` (group -> {name: target})."""
        project = self.root / "projects" / name
        for module, source in modules.items():
            path = project / "src" / module
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        groups = "\n".join(f'[project.entry-points."{group}"]\n'
                           + "\n".join(f'"{k}" = "{v}"' for k, v in eps.items())
                           for group, eps in entry_points.items())
        (project / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
            f'[project]\nname = "{name}"\nversion = "0.0.1"\n{groups}\n'
            '[tool.setuptools.packages.find]\nwhere = ["src"]\n')
        return project

    def install(self, *projects: str | Path) -> None:
        """``pip install --no-deps --no-index --target site`` (offline, no build isolation)."""
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--no-index", "--target", str(self.site), *map(str, projects)],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"pip install failed:\n{result.stdout}{result.stderr}")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("MD_DISABLE_PLUGIN_AUTOLOAD", None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.site), env.get("PYTHONPATH")]))
        return env

    def run_md(self, *args: str, cwd: Path | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``python -m md_framework ARGS`` with the installed distributions visible."""
        return subprocess.run([sys.executable, "-m", "md_framework", *args], capture_output=True,
                              text=True, env=self.env(), cwd=cwd, timeout=timeout)

    def run_python(self, code: str, cwd: Path | None = None,
                   timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``code`` (dedented) in a fresh interpreter with the distributions visible."""
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, env=self.env(), cwd=cwd, timeout=timeout)

    @contextlib.contextmanager
    def activated(self) -> Iterator[Path]:
        """In-process: ``site`` first on ``sys.path`` and plugin autoloading on; both restored
        afterwards (modules imported meanwhile stay imported)."""
        old_path = list(sys.path)
        old_flag = os.environ.pop("MD_DISABLE_PLUGIN_AUTOLOAD", None)
        sys.path.insert(0, str(self.site))
        try:
            yield self.site
        finally:
            sys.path[:] = old_path
            if old_flag is not None:
                os.environ["MD_DISABLE_PLUGIN_AUTOLOAD"] = old_flag


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def md_hooks() -> Callable[..., Hooks]:
    """``md_hooks(*plugins, builtins=False)``: a hooks runner over a fresh plugin manager
    holding only ``plugins`` (:func:`plugin_hooks`)."""
    return plugin_hooks


@pytest.fixture
def md_synthetic_diff() -> Callable[..., CircuitDiff]:
    """``md_synthetic_diff(**options)``: :func:`synthetic_circuit_diff`."""
    return synthetic_circuit_diff


@pytest.fixture(scope="session")
def md_tiny_model_pair(tmp_path_factory: pytest.TempPathFactory) -> ModelPair:
    """The builtin toy model and its knowledge edit (:func:`load_tiny_model_pair`)."""
    return load_tiny_model_pair(_cache_dir(tmp_path_factory))


@pytest.fixture
def md_installed(tmp_path: Path) -> InstalledDistributions:
    """A private install directory for distributions under test (:class:`InstalledDistributions`)."""
    return InstalledDistributions(tmp_path / "md-installed")
