"""Exceptions of the kernel, each carrying enough context for a one-line actionable message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean "x"?' for the closest choice, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(set(choices)), n=1, cutoff=0.5)
    return f' Did you mean "{matches[0]}"?' if matches else ""


class MDError(Exception):
    """Base class of every error md-framework raises on purpose."""


class ConfigError(MDError):
    """A configuration file or object is invalid; the message names the field and value."""


class UnknownComponentError(ConfigError):
    """A config names a driver or plugin that is not installed."""

    def __init__(self, kind: str, name: str, available: Iterable[str]) -> None:
        available = sorted(set(available))
        self.kind = kind
        self.name = name
        self.available = available
        listing = ", ".join(available) if available else "(none installed)"
        super().__init__(
            f'unknown {kind} "{name}".{did_you_mean(name, available)} Available: {listing}'
        )


class PluginError(MDError):
    """A third-party or builtin plugin failed to load or raised inside a hook."""

    def __init__(self, plugin: str, distribution: str | None, message: str) -> None:
        self.plugin = plugin
        self.distribution = distribution
        where = f'plugin "{plugin}"' + (f" (distribution {distribution})" if distribution else "")
        super().__init__(f"{where}: {message}")


class MissingDependencyError(MDError):
    """An optional heavy dependency is not installed; the message says what to pip install."""

    def __init__(self, module: str, extra: str | None = None, purpose: str = "") -> None:
        hint = f'pip install "md-framework[{extra}]"' if extra else f"pip install {module}"
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"missing optional dependency '{module}'{why}: run `{hint}`")
        self.module = module
