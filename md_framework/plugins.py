"""The pluggy plugin manager: discovery, blocking, fault isolation and hook calling.

Contribute-all plugins are registered through the ``md_framework`` entry-point group (the
builtins too, from md-framework's own ``pyproject.toml``). Every call of
:func:`get_plugin_manager` builds a fresh manager: nothing is global, so tests and runs
cannot leak plugins into each other.

Environment switches:

* ``MD_DISABLE_PLUGIN_AUTOLOAD=1`` – ignore every distribution but md-framework itself.
* ``MD_TRACE_HOOKS=1`` – write every hook call and result to stderr (pluggy tracing).
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from md_framework import hookspecs
from md_framework.drivers import BUILTIN_DISTRIBUTION, autoload_disabled
from md_framework.errors import ConfigError, PluginError, UnknownComponentError

ENTRY_POINT_GROUP = "md_framework"
TRACE_ENV = "MD_TRACE_HOOKS"

#: builtin plugins a run cannot work without (the algorithms behind the ``md_stage_*``
#: hooks, builtin_plugins.pipeline). Like pytest's essential plugins they are always
#: loaded and cannot be blocked; replace one by implementing its stage hook with
#: ``tryfirst=True``. Names only: the kernel never imports builtin plugins.
ESSENTIAL_PLUGINS = ("graph-diff", "discovery", "screen", "test-selection", "validation",
                     "refinement", "causal", "design-stages")


@dataclass
class PluginRecord:
    """What the kernel knows about one ``md_framework`` entry point."""

    name: str
    value: str
    distribution: str | None
    version: str | None
    status: Literal["ok", "broken", "blocked", "not-autoloaded"] = "ok"
    error: str | None = None
    hooks: list[str] = field(default_factory=list)


class MDPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from and which failed."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        plugin_name = super().register(plugin, name)
        if plugin_name is not None:
            for hook_caller in self.get_hookcallers(plugin) or []:
                for impl in hook_caller.get_hookimpls():
                    if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                        self.unregister(plugin)
                        raise PluginError(
                            plugin_name, self.distribution_of(plugin_name),
                            f"{hook_caller.name} is a hook wrapper; md_ hooks are called"
                            " per plugin and do not support wrappers",
                        )
            record = self.records.get(plugin_name)
            if record is not None:
                record.hooks = self.hooks_of(plugin_name)
        return plugin_name

    def distribution_of(self, plugin_name: str) -> str | None:
        record = self.records.get(plugin_name)
        return record.distribution if record else None

    def hooks_of(self, plugin_name: str) -> list[str]:
        plugin = self.get_plugin(plugin_name)
        if plugin is None:
            return []
        return sorted(caller.name for caller in self.get_hookcallers(plugin) or [])


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def get_plugin_manager(
    *,
    autoload: bool | None = None,
    blocked: Iterable[str] = (),
    enabled: Iterable[str] | None = None,
    extra_plugins: Sequence[tuple[str, Any]] = (),
    strict: bool = False,
    builtins: bool = True,
) -> MDPluginManager:
    """Build a fresh plugin manager.

    * ``autoload`` – load third-party entry points (default: on unless
      ``MD_DISABLE_PLUGIN_AUTOLOAD`` is set); md-framework's builtins always load.
    * ``blocked`` – entry-point names not to load (config ``plugins.disable``).
    * ``enabled`` – if given, only these names (plus builtins) are loaded.
    * ``extra_plugins`` – ``(name, module_or_object)`` pairs registered directly (tests).
    * ``strict`` – raise :class:`PluginError` on the first plugin that fails to import
      instead of recording it as broken.
    * ``builtins`` – also load md-framework's own hook plugins (off in a plugin's unit
      tests, to see that plugin's contributions alone).
    """
    autoload = (not autoload_disabled()) if autoload is None else autoload
    blocked = set(blocked)
    essential = sorted(blocked & set(ESSENTIAL_PLUGINS))
    if essential:
        raise ConfigError(
            f"plugins.disable: {', '.join(essential)} {'is' if len(essential) == 1 else 'are'}"
            " essential (a run cannot work without them) and cannot be blocked; to replace one,"
            " register a plugin implementing its md_stage_* hook with @hookimpl(tryfirst=True)"
            " (CONTRIBUTING.md, 'Replacing a stage')")
    enabled_set = set(enabled) if enabled is not None else None
    pm = MDPluginManager()
    for entry_point in _entry_points():
        dist = entry_point.dist
        dist_name = dist.metadata["Name"] if dist is not None else None
        record = PluginRecord(
            entry_point.name, entry_point.value, dist_name, dist.version if dist else None
        )
        pm.records[entry_point.name] = record
        is_builtin = dist_name == BUILTIN_DISTRIBUTION
        if entry_point.name in blocked:
            record.status = "blocked"
            pm.set_blocked(entry_point.name)
            continue
        if is_builtin and not builtins and entry_point.name not in ESSENTIAL_PLUGINS:
            record.status = "not-autoloaded"
            continue
        if not is_builtin and (not autoload or (enabled_set is not None and entry_point.name not in enabled_set)):
            record.status = "not-autoloaded"
            continue
        try:
            plugin = entry_point.load()
            pm.register(plugin, name=entry_point.name)
            _check_pending_of(pm, plugin, entry_point.name, dist_name)
        except PluginError as exc:
            record.status, record.error = "broken", str(exc)
            if strict:
                raise
        except Exception as exc:  # a broken third-party plugin must not stop the kernel
            record.status, record.error = "broken", f"{type(exc).__name__}: {exc}"
            if strict:
                raise PluginError(entry_point.name, dist_name, record.error) from exc
    for name, plugin in extra_plugins:
        pm.records[name] = PluginRecord(name, repr(plugin), None, None)
        pm.register(plugin, name=name)
    pm.check_pending()
    if _tracing():  # also trace calls made straight through pm.hook
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


def _tracing() -> bool:
    return os.environ.get(TRACE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _check_pending_of(pm: MDPluginManager, plugin: Any, name: str, dist: str | None) -> None:
    """Validate one plugin's hook names now, so a typo marks only that plugin broken."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(plugin)
        raise PluginError(name, dist, f"unknown hook: {exc}") from exc


@dataclass
class Contribution:
    """One plugin's return value from one hook call."""

    plugin: str
    value: Any


class Hooks:
    """Calls ``md_`` hooks one implementation at a time.

    Results carry the contributing plugin's name (provenance) and a raising plugin is named
    in the error. With ``on_error="skip"`` a raising plugin is recorded in ``skipped`` and
    the call goes on with the others.
    """

    def __init__(self, pm: MDPluginManager, on_error: Literal["stop", "skip"] = "stop") -> None:
        self.pm = pm
        self.on_error = on_error
        self.skipped: list[PluginError] = []
        #: stage hook -> the plugin whose implementation ran (provenance of the algorithms)
        self.stage_providers: dict[str, str] = {}

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        caller = getattr(self.pm.hook, hook_name, None)
        if caller is None:
            raise UnknownComponentError("hook", hook_name, [h for h in dir(self.pm.hook) if h.startswith("md_")])
        # pluggy calls the last registered (and tryfirst) implementations first.
        return list(reversed(caller.get_hookimpls()))

    def _call_one(self, impl: pluggy.HookImpl, hook_name: str, kwargs: dict[str, Any]) -> Any:
        args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
        missing = [name for name in impl.argnames if name not in kwargs]
        if missing:
            raise PluginError(impl.plugin_name, self.pm.distribution_of(impl.plugin_name),
                              f"{hook_name} implementation asks for unknown arguments {missing}")
        if _tracing():
            sys.stderr.write(f"md hook: {impl.plugin_name}.{hook_name}({', '.join(args)})\n")
        result = impl.function(**args)
        if _tracing():
            sys.stderr.write(f"md hook: {impl.plugin_name}.{hook_name} -> {_brief(result)}\n")
        return result

    def call(self, hook_name: str, **kwargs: Any) -> list[Contribution]:
        """Call every implementation; returns their non-``None`` results with provenance."""
        contributions: list[Contribution] = []
        for impl in self._impls(hook_name):
            try:
                value = self._call_one(impl, hook_name, kwargs)
            except (PluginError, ConfigError):
                raise  # a bad input reported by a plugin is the user's to fix, not the plugin's
            except Exception as exc:
                error = PluginError(
                    impl.plugin_name, self.pm.distribution_of(impl.plugin_name),
                    f"hook {hook_name} raised {type(exc).__name__}: {exc}",
                )
                if self.on_error == "skip":
                    self.skipped.append(error)
                    continue
                raise error from exc
            if value is not None:
                contributions.append(Contribution(impl.plugin_name, value))
        return contributions

    def collect(self, hook_name: str, **kwargs: Any) -> list[Contribution]:
        """Flatten list-returning hooks into one contribution per item."""
        items: list[Contribution] = []
        for contribution in self.call(hook_name, **kwargs):
            values = contribution.value
            if not isinstance(values, (list, tuple)):
                values = [values]
            items.extend(Contribution(contribution.plugin, v) for v in values)
        return items

    def first(self, hook_name: str, **kwargs: Any) -> Contribution | None:
        """Firstresult semantics: the first non-``None`` result, with its plugin."""
        for impl in self._impls(hook_name):
            try:
                value = self._call_one(impl, hook_name, kwargs)
            except (PluginError, ConfigError):
                raise
            except Exception as exc:
                raise PluginError(
                    impl.plugin_name, self.pm.distribution_of(impl.plugin_name),
                    f"hook {hook_name} raised {type(exc).__name__}: {exc}",
                ) from exc
            if value is not None:
                return Contribution(impl.plugin_name, value)
        return None

    def stage(self, hook_name: str, **kwargs: Any) -> Any:
        """Run one ``md_stage_*`` hook: the first implementation returning something wins
        (firstresult), its plugin is recorded in :attr:`stage_providers`, and its exceptions
        propagate unchanged. No implementation answering is an error naming the essential
        plugins (a plugin manager built without them)."""
        for impl in self._impls(hook_name):
            value = self._call_one(impl, hook_name, kwargs)
            if value is not None:
                self.stage_providers[hook_name] = impl.plugin_name
                return value
        raise PluginError(
            "md_framework", None,
            f"no plugin implements {hook_name}: the essential builtin plugins"
            f" ({', '.join(ESSENTIAL_PLUGINS)}) are missing from this plugin manager;"
            " build it with md_framework.plugins.get_plugin_manager()")

