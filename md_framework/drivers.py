"""Single-choice components ("drivers"), discovered through stevedore entry-point groups.

Config names exactly one driver per group; the entry-point name is that name. Discovery
reads entry points (with their distribution) without importing them, so listing and name
validation never run plugin code; loading one driver goes through
:class:`stevedore.driver.DriverManager`.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
from abc import ABC
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from md_framework.errors import ConfigError, PluginError, UnknownComponentError
from md_framework.types import StrictModel

#: The distribution whose entry points count as builtin (never blocked by autoload off).
BUILTIN_DISTRIBUTION = "md-framework"
#: Set to 1/true to ignore plugins from every distribution except md-framework itself.
DISABLE_AUTOLOAD_ENV = "MD_DISABLE_PLUGIN_AUTOLOAD"


def autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class NoOptions(StrictModel):
    """Options model of drivers that take none."""


class Driver(ABC):
    """Base of every driver. Subclasses set ``Options`` (a ``StrictModel``) and ``description``.

    The kernel sets ``name`` to the entry-point name the driver was loaded under.
    """

    Options: ClassVar[type[BaseModel]] = NoOptions
    description: ClassVar[str] = ""
    name: ClassVar[str] = ""

    def __init__(self, options: BaseModel | Mapping[str, Any] | None = None) -> None:
        self.options = validate_options(type(self), options)


def validate_options(driver_cls: type[Driver], options: Any) -> BaseModel:
    """Validate ``options`` against ``driver_cls.Options``, with an error naming the driver."""
    model = driver_cls.Options
    if isinstance(options, model):
        return options
    if isinstance(options, BaseModel):
        options = options.model_dump()
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as exc:
        problems = "; ".join(_describe_option_error(err, model) for err in exc.errors())
        raise ConfigError(f'invalid options for driver "{driver_cls.name}": {problems}') from None


def _describe_option_error(err: Any, model: type[BaseModel]) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "(options)"
    if err["type"] == "extra_forbidden":
        from md_framework.errors import did_you_mean

        known = sorted(model.model_fields) if len(err["loc"]) == 1 else []
        listing = f" Known options: {', '.join(known)}" if known else ""
        return f"{where}: unknown option.{did_you_mean(str(err['loc'][-1]), known)}{listing}"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


@dataclass(frozen=True)
class DriverGroup:
    key: str  # how config and docs refer to it
    namespace: str  # the entry-point group
    base: str  # dotted path of the base class
    description: str


DRIVER_GROUPS: dict[str, DriverGroup] = {
    group.key: group
    for group in (
        DriverGroup(
            "tracer", "md_framework.tracers", "md_framework.tracing_api:Tracer",
            "turns a model and prompts into per-prompt circuit graphs",
        ),
        DriverGroup(
            "fdr_procedure", "md_framework.fdr_procedures", "md_framework.stats_api:FDRProcedure",
            "online (or batch) false-discovery-rate procedure deciding hypotheses",
        ),
        DriverGroup(
            "paired_test", "md_framework.paired_tests", "md_framework.stats_api:PairedTest",
            "test of 'both models identical' on paired measurements",
        ),
        DriverGroup(
            "bandit_strategy", "md_framework.bandit_strategies",
            "md_framework.stats_api:BanditStrategy",
            "chooses which hypotheses or prompt families to sample next",
        ),
        DriverGroup(
            "executor", "md_framework.executors", "md_framework.tracing_api:Executor",
            "runs independent work items serially, in processes or on Ray",
        ),
    )
}


@dataclass(frozen=True)
class DriverEntry:
    group: str
    name: str
    value: str
    distribution: str | None
    version: str | None


def _distribution_of(entry_point: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _group(key: str) -> DriverGroup:
    try:
        return DRIVER_GROUPS[key]
    except KeyError:
        raise UnknownComponentError("driver group", key, DRIVER_GROUPS) from None


def discover_drivers(
    key: str, *, blocked: frozenset[str] | set[str] = frozenset(), autoload: bool | None = None
) -> dict[str, DriverEntry]:
    """Installed drivers of one group by name, without importing any of them.

    With autoload off (argument or ``MD_DISABLE_PLUGIN_AUTOLOAD``) only md-framework's own
    drivers are seen. ``blocked`` names (from config's ``plugins.disable``) are left out.
    """
    group = _group(key)
    autoload = (not autoload_disabled()) if autoload is None else autoload
    found: dict[str, DriverEntry] = {}
    seen_dists: dict[str, list[str]] = {}
    for entry_point in metadata.entry_points(group=group.namespace):
        dist, version = _distribution_of(entry_point)
        if not autoload and dist != BUILTIN_DISTRIBUTION:
            continue
        if entry_point.name in blocked:
            continue
        seen_dists.setdefault(entry_point.name, []).append(dist or "?")
        found[entry_point.name] = DriverEntry(
            key, entry_point.name, entry_point.value, dist, version
        )
    for name, dists in seen_dists.items():
        if len(set(dists)) > 1:
            raise PluginError(
                name, ", ".join(sorted(set(dists))),
                f"{group.namespace} driver name provided by several distributions;"
                " uninstall one or block it in config (plugins.disable)",
            )
    return found


def load_driver_class(
    key: str, name: str, *, blocked: frozenset[str] | set[str] = frozenset(),
    autoload: bool | None = None,
) -> type[Driver]:
    """Import the driver ``name`` of group ``key`` through stevedore and check its type."""
    from stevedore.driver import DriverManager  # stevedore import is cheap but not free

    group = _group(key)
    available = discover_drivers(key, blocked=blocked, autoload=autoload)
    if name not in available:
        raise UnknownComponentError(key.replace("_", " "), name, available)
    entry = available[name]
    failure: list[BaseException] = []

    def on_failure(_manager: Any, _entry_point: Any, exc: BaseException) -> None:
        failure.append(exc)

    try:
        manager = DriverManager(
            namespace=group.namespace, name=name, invoke_on_load=False,
            on_load_failure_callback=on_failure,
        )
    except RuntimeError as exc:  # stevedore's NoMatches / MultipleMatches
        if not failure:
            failure.append(exc)
        manager = None
    if failure or manager is None or not manager.extensions:
        reason = f"{type(failure[0]).__name__}: {failure[0]}" if failure else "failed to load"
        raise PluginError(name, entry.distribution, f"driver could not be imported ({reason})")
    driver_cls = manager.driver
    base = _import_object(group.base)
    if not (isinstance(driver_cls, type) and issubclass(driver_cls, base)):
        raise PluginError(
            name, entry.distribution,
            f"{entry.value} is not a subclass of {group.base.replace(':', '.')}",
        )
    driver_cls.name = name
    return driver_cls


def _import_object(path: str) -> Any:
    import importlib

    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def create_driver(key: str, name: str, options: Any = None, /, *args: Any, **kwargs: Any) -> Any:
    """Load driver ``name`` of group ``key`` and instantiate it with validated ``options``.

    Extra positional/keyword arguments go to the constructor before ``options`` is
    applied, e.g. ``create_driver("fdr_procedure", "saffron", {}, alpha=0.05)``.
    """
    driver_cls = load_driver_class(key, name)
    return driver_cls(*args, options=validate_options(driver_cls, options), **kwargs)
