"""Online (and batch) false-discovery-rate procedures, as md-framework drivers.

The online procedures wrap the ``online-fdr`` package (v1.0; its tests compare every
procedure against R's ``onlineFDR``); the batch ones wrap statsmodels' ``multipletests``.
Nothing is re-implemented here: the drivers pass R ``onlineFDR``'s defaults, validate the
input, report the test level used for every hypothesis and persist the state.

State and restore
-----------------
``state()`` returns plain JSON: the procedure name, alpha, the validated options and the
library's own versioned snapshot (``online_fdr``'s ``snapshot()``, which stores the
procedure's complete internal state: wealth, candidate and rejection indices, the gamma
sequence's parameters). ``from_state`` rebuilds the library object with
``from_snapshot``; no random numbers are involved, so the decisions after a restore are
bit-identical to those of an uninterrupted run (property-tested in
``tests/stats/test_fdr_state.py``). The snapshot uses ``online_fdr``'s private attribute
names, so a state is read back by the same ``online-fdr`` version that wrote it; the
version is recorded and a mismatch is refused rather than silently misread.

Python API (three lines)::

    from md_framework.drivers import create_driver
    saffron = create_driver("fdr_procedure", "saffron", {}, alpha=0.05)
    decisions = saffron.test_many([2.9e-08, 0.067, 0.015])

References: Ramdas, Zrnic, Wainwright & Jordan (2018) SAFFRON, ICML; Tian & Ramdas
(2019) ADDIS, NeurIPS; Javanmard & Montanari (2018) LORD/LOND, Ann. Statist.; Ramdas,
Yang, Wainwright & Jordan (2017) LORD++ / GAI++, NeurIPS; Foster & Stine (2008) alpha
investing, JRSS-B; Xu & Ramdas (2024) e-LOND, AISTATS; Benjamini & Hochberg (1995);
Benjamini & Yekutieli (2001); Robertson et al. (2019) onlineFDR, Bioinformatics.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import AliasChoices, Field

from md_framework.errors import ConfigError
from md_framework.stats_api import FDRDecision, FDRProcedure, StatisticsError
from md_framework.types import StrictModel

#: R onlineFDR's normalising constant of gamma_j = c / j^1.6 (sums to 1 over j >= 1).
SAFFRON_GAMMA_CONSTANT = 0.4374901658
STATE_SCHEMA = 1

__all__ = [
    "Addis",
    "BenjaminiHochberg",
    "BenjaminiYekutieli",
    "ELond",
    "GeneralizedAlphaInvesting",
    "Lond",
    "LordPlusPlus",
    "Saffron",
    "check_value",
    "restore_procedure",
]


def _library_version() -> str:
    try:
        return importlib.metadata.version("online-fdr")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - it is a dependency
        return "unknown"


def check_value(value: Any, kind: str) -> float:
    """Return ``value`` as a float after checking it is a valid p-value (``kind="p"``:
    finite, in [0, 1]) or e-value (``kind="e"``: non-negative, +inf allowed)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StatisticsError(f"not a number: {value!r}") from None
    if kind == "p":
        if not (math.isfinite(number) and 0.0 <= number <= 1.0):
            raise StatisticsError(f"p-values must lie in [0, 1], got {value!r}")
    elif math.isnan(number) or number < 0.0:
        raise StatisticsError(f"e-values must be non-negative numbers, got {value!r}")
    return number


def _initial_wealth(w0: float | None, alpha: float, fraction: float, name: str) -> float:
    wealth = alpha * fraction if w0 is None else w0
    if not 0.0 < wealth < alpha:
        raise ConfigError(
            f'invalid options for driver "{name}": w0 must lie in (0, alpha={alpha}),'
            f" got {wealth!r}"
        )
    return wealth


class _OnlineProcedure(FDRProcedure):
    """An ``online_fdr`` method behind the driver interface (subclasses build it)."""

    procedure_name: ClassVar[str] = ""

    def __init__(self, alpha: float, options: Any = None) -> None:
        try:
            super().__init__(alpha, options)
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f'driver "{self.procedure_name}": {exc}') from None
        try:
            self._method = self._build()
        except ValueError as exc:  # the library's own parameter checks
            raise ConfigError(f'invalid options for driver "{self.procedure_name}": {exc}') from None

    def _build(self) -> Any:  # pragma: no cover - every subclass overrides it
        raise TypeError(f"{type(self).__name__} must define _build")

    @property
    def num_tested(self) -> int:
        return int(self._method.num_hypotheses)

    def test_many(self, values: Sequence[float]) -> list[FDRDecision]:
        return [self.test(value) for value in values]

    def test(self, value: float) -> FDRDecision:
        number = check_value(value, self.input_kind)
        rejected = bool(self._method.test_one(number))
        return FDRDecision(
            index=self.num_tested, value=number,
            level=float(self._method.last_test_level), rejected=rejected,
        )

    def state(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "procedure": self.procedure_name,
            "alpha": self.alpha,
            "options": self.options.model_dump(mode="json", by_alias=False),
            "engine": "online-fdr",
            "engine_version": _library_version(),
            "snapshot": self._method.snapshot(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FDRProcedure:
        _check_state(cls, state)
        if state.get("engine_version") != _library_version():
            raise StatisticsError(
                f"this {cls.procedure_name} state was written with online-fdr"
                f" {state.get('engine_version')}, but {_library_version()} is installed;"
                " restore it with the version that wrote it"
            )
        procedure = cls(float(state["alpha"]), state.get("options") or {})
        try:
            procedure._method = type(procedure._method).from_snapshot(dict(state["snapshot"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StatisticsError(f"corrupt {cls.procedure_name} state: {exc}") from None
        return procedure


def _check_state(cls: type[FDRProcedure], state: Mapping[str, Any]) -> None:
    if not isinstance(state, Mapping) or state.get("schema") != STATE_SCHEMA:
        raise StatisticsError(f"not an FDR procedure state (schema {STATE_SCHEMA} expected)")
    name = getattr(cls, "procedure_name", "")
    if state.get("procedure") != name:
        raise StatisticsError(
            f'state of procedure "{state.get("procedure")}" cannot restore "{name}";'
            " use builtin_plugins.stats.fdr.restore_procedure"
        )


# --------------------------------------------------------------------------- p-value procedures


class SaffronOptions(StrictModel):
    lambda_: float = Field(
        default=0.5, gt=0.0, lt=1.0, validation_alias=AliasChoices("lambda_", "lambda"),
        description="candidate threshold: p <= lambda counts as a candidate (R default 0.5)",
    )
    w0: float | None = Field(
        default=None, description="initial wealth, in (0, alpha); default alpha/2 as in R"
    )
    gamma_exponent: float = Field(
        default=1.6, gt=1.0,
        description="gamma_j = j^-s / zeta(s); s=1.6 uses R's constant 0.4374901658",
    )


class Saffron(_OnlineProcedure):
    """SAFFRON (Ramdas et al. 2018): adaptive alpha-investing estimating the share of nulls.

    Defaults as R ``onlineFDR::SAFFRON``: lambda=0.5, w0=alpha/2, gamma_j = 0.4374901658
    j^-1.6 (normalised to sum to 1). alpha_t = min(lambda, (1-lambda)(w0 gamma_{t-C_0+} +
    (alpha-w0) gamma_{t-tau_1-C_1+} + alpha sum_{j>=2} gamma_{t-tau_j-C_j+})).
    """

    Options = SaffronOptions
    description = "SAFFRON adaptive online FDR (default; R onlineFDR defaults)"
    procedure_name = "saffron"

    def _build(self) -> Any:
        from online_fdr.p_values import Saffron as _Saffron

        opts = self.options
        method = _Saffron(
            self.alpha, _initial_wealth(opts.w0, self.alpha, 0.5, self.procedure_name),
            opts.lambda_,
        )
        if opts.gamma_exponent != 1.6:
            from online_fdr.core.utils.sequence import DefaultSaffronGammaSequence
            from scipy.special import zeta

            method.seq = DefaultSaffronGammaSequence(
                gamma_exp=opts.gamma_exponent, c=float(1.0 / zeta(opts.gamma_exponent))
            )
        return method


class AddisOptions(StrictModel):
    lambda_: float = Field(
        default=0.25, ge=0.0, lt=1.0, validation_alias=AliasChoices("lambda_", "lambda"),
        description="candidate threshold (R default 0.25)",
    )
    tau: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="discarding threshold: p > tau is discarded (R default 0.5)",
    )
    w0: float | None = Field(default=None, description="initial wealth; default alpha/2")


class Addis(_OnlineProcedure):
    """ADDIS (Tian & Ramdas 2019): adaptive *and* discarding, robust to conservative nulls.

    Defaults as R ``onlineFDR::ADDIS``: lambda=0.25, tau=0.5, w0=alpha/2, gamma_j ∝ j^-1.6.
    """

    Options = AddisOptions
    description = "ADDIS adaptive-discarding online FDR (robust to conservative nulls)"
    procedure_name = "addis"

    def _build(self) -> Any:
        from online_fdr.p_values import Addis as _Addis

        opts = self.options
        return _Addis(
            self.alpha, _initial_wealth(opts.w0, self.alpha, 0.5, self.procedure_name),
            opts.lambda_, opts.tau,
        )


class LordOptions(StrictModel):
    w0: float | None = Field(default=None, description="initial wealth; default alpha/10")


class LordPlusPlus(_OnlineProcedure):
    """LORD++ (Ramdas et al. 2017; Javanmard & Montanari 2018), R ``LORD(version="++")``.

    alpha_t = w0 gamma_t + (alpha - w0) gamma_{t-tau_1} + alpha sum_{j>=2} gamma_{t-tau_j},
    gamma_j = 0.07720838 log(max(j,2)) / (j exp(sqrt(log j))); default w0 = alpha/10.
    """

    Options = LordOptions
    description = "LORD++ online FDR (Javanmard & Montanari; Ramdas et al.)"
    procedure_name = "lord++"

    def _build(self) -> Any:
        from online_fdr.p_values import LordPlusPlus as _Lord

        return _Lord(self.alpha, _initial_wealth(self.options.w0, self.alpha, 0.1,
                                                 self.procedure_name))


class LondOptions(StrictModel):
    original: bool = Field(
        default=True, description="alpha_t = alpha gamma_t (D_{t-1}+1); False: max(D_{t-1}, 1)"
    )
    dependent: bool = Field(
        default=False, description="divide by the harmonic number (valid under any dependence)"
    )


class Lond(_OnlineProcedure):
    """LOND (Javanmard & Montanari 2015): alpha_t = alpha gamma_t (D_{t-1} + 1), where D is the
    number of discoveries so far; ``dependent`` gives the arbitrary-dependence version."""

    Options = LondOptions
    description = "LOND online FDR (valid under PRDS; 'dependent' for any dependence)"
    procedure_name = "lond"

    def _build(self) -> Any:
        from online_fdr.p_values import Lond as _Lond

        return _Lond(self.alpha, original=self.options.original,
                     dependent=self.options.dependent)


class GaiOptions(StrictModel):
    w0: float | None = Field(default=None, description="initial wealth; default alpha/2")


class GeneralizedAlphaInvesting(_OnlineProcedure):
    """Generalised alpha-investing (Foster & Stine 2008; Aharoni & Rosset 2014) in its GAI++
    form as R ``onlineFDR::Alpha_investing`` (SAFFRON with lambda_t = alpha_t; Ramdas et al.
    2018): alpha_t = a_t / (1 + a_t). Cost grows quadratically with the stream length."""

    Options = GaiOptions
    description = "generalised alpha-investing (R onlineFDR Alpha_investing)"
    procedure_name = "alpha-investing"

    def _build(self) -> Any:
        from online_fdr.p_values import Gai

        return Gai(self.alpha, _initial_wealth(self.options.w0, self.alpha, 0.5,
                                               self.procedure_name))


class ELondOptions(StrictModel):
    pass


class ELond(_OnlineProcedure):
    """e-LOND (Xu & Ramdas 2024): online FDR with **e-values**, valid under arbitrary
    dependence. Level alpha_t = alpha gamma_t (D_{t-1} + 1) with LOND's gamma; hypothesis t is
    rejected when e_t >= 1 / alpha_t. The reported ``level`` is alpha_t."""

    Options = ELondOptions
    description = "e-LOND online FDR on e-values (any dependence)"
    procedure_name = "e-lond"
    input_kind = "e"

    def _build(self) -> Any:
        from online_fdr.e_values import ELond as _ELond

        return _ELond(self.alpha)


# --------------------------------------------------------------------------- batch procedures


class BatchOptions(StrictModel):
    pass


class _BatchProcedure(FDRProcedure):
    """A batch step-up procedure from statsmodels' ``multipletests``.

    ``test_many(values)`` decides ``values`` as one family (offline re-analysis); a later call
    is a new, separate family whose indices continue the count. The reported level of every
    hypothesis of a family is the step-up cut-off k·alpha/(m·c(m)) compared with its p-value
    (0 when nothing is rejected), c(m)=1 for BH and sum_{i<=m} 1/i for BY.
    """

    online = False
    method: ClassVar[str] = ""
    procedure_name: ClassVar[str] = ""
    Options = BatchOptions

    def __init__(self, alpha: float, options: Any = None) -> None:
        try:
            super().__init__(alpha, options)
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f'driver "{self.procedure_name}": {exc}') from None
        self._count = 0

    @property
    def num_tested(self) -> int:
        return self._count

    def _correction(self, m: int) -> float:
        return 1.0

    def test_many(self, values: Sequence[float]) -> list[FDRDecision]:
        numbers = [check_value(v, "p") for v in values]
        if not numbers:
            return []
        from statsmodels.stats.multitest import multipletests

        rejected = [bool(r) for r in multipletests(numbers, alpha=self.alpha,
                                                   method=self.method)[0]]
        m = len(numbers)
        k = sum(rejected)
        level = k * self.alpha / (m * self._correction(m))
        start = self._count
        self._count += m
        return [
            FDRDecision(index=start + i + 1, value=v, level=level, rejected=r)
            for i, (v, r) in enumerate(zip(numbers, rejected))
        ]

    def state(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA, "procedure": self.procedure_name, "alpha": self.alpha,
            "options": self.options.model_dump(mode="json"), "engine": "statsmodels",
            "count": self._count,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FDRProcedure:
        _check_state(cls, state)
        procedure = cls(float(state["alpha"]), state.get("options") or {})
        procedure._count = int(state.get("count", 0))
        return procedure


class BenjaminiHochberg(_BatchProcedure):
    """Benjamini-Hochberg (1995) step-up; FDR <= alpha under independence/PRDS. Batch only."""

    description = "Benjamini-Hochberg batch FDR (offline re-analysis)"
    procedure_name = "bh"
    method = "fdr_bh"


class BenjaminiYekutieli(_BatchProcedure):
    """Benjamini-Yekutieli (2001) step-up; FDR <= alpha under any dependence. Batch only."""

    description = "Benjamini-Yekutieli batch FDR under any dependence (offline re-analysis)"
    procedure_name = "by"
    method = "fdr_by"

    def _correction(self, m: int) -> float:
        return sum(1.0 / i for i in range(1, m + 1))


PROCEDURES: dict[str, type[FDRProcedure]] = {
    cls.procedure_name: cls
    for cls in (Saffron, Addis, LordPlusPlus, Lond, GeneralizedAlphaInvesting, ELond,
                BenjaminiHochberg, BenjaminiYekutieli)
}


def restore_procedure(state: Mapping[str, Any]) -> FDRProcedure:
    """Rebuild whichever procedure wrote ``state`` (loaded through the driver registry, so a
    third-party procedure's state restores too)."""
    from md_framework.drivers import load_driver_class

    if not isinstance(state, Mapping) or "procedure" not in state:
        raise StatisticsError("not an FDR procedure state: it has no 'procedure' key")
    cls = load_driver_class("fdr_procedure", str(state["procedure"]))
    return cls.from_state(state)  # type: ignore[attr-defined]
