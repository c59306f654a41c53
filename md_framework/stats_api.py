"""Driver interfaces of the statistical components: online FDR procedures, paired tests
and bandit strategies. Implementations live in plugins (the builtins in
``builtin_plugins.stats``); config picks one of each by entry-point name.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from md_framework.drivers import Driver
from md_framework.errors import MDError
from md_framework.types import StrictModel

Alternative = Literal["two-sided", "greater", "less"]


class StatisticsError(MDError, ValueError):
    """Invalid input to a statistical driver (a p-value outside [0, 1], unequal pair
    lengths, a state of another procedure...). A ``ValueError`` for Python callers and an
    ``MDError`` for the command line, which prints it as one line."""


class FDRDecision(StrictModel):
    """The outcome of testing one hypothesis in an online FDR stream (1-based index)."""

    index: int = Field(ge=1)
    value: float
    level: float = Field(ge=0.0)
    rejected: bool


class FDRProcedure(Driver):
    """An FDR procedure. ``input_kind`` says whether it consumes p-values or e-values.

    Online procedures decide each hypothesis when it arrives and never revise a decision;
    batch procedures (``online = False``) decide a whole list at once and are meant for
    offline re-analysis only.
    """

    input_kind: ClassVar[Literal["p", "e"]] = "p"
    online: ClassVar[bool] = True

    def __init__(self, alpha: float, options: Any = None) -> None:
        super().__init__(options)
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        self.alpha = alpha

    @abstractmethod
    def test_many(self, values: Sequence[float]) -> list[FDRDecision]:
        """Decide ``values`` in order (continuing the stream for online procedures)."""

    def test(self, value: float) -> FDRDecision:
        """Decide one value (the next hypothesis of the stream)."""
        return self.test_many([value])[0]

    @property
    @abstractmethod
    def num_tested(self) -> int:
        """How many hypotheses this procedure has decided so far."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-serialisable state from which :meth:`from_state` rebuilds the procedure."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: Mapping[str, Any]) -> FDRProcedure:
        """Rebuild a procedure whose future decisions equal an uninterrupted run's."""


class PairedTestResult(StrictModel):
    test: str
    n: int = Field(ge=0)
    statistic: float | None = None
    p_value: float = Field(ge=0.0, le=1.0)
    e_value: float | None = Field(default=None, ge=0.0)
    alternative: Alternative = "two-sided"
    details: dict[str, Any] = Field(default_factory=dict)


class PairedTest(Driver):
    """A test of "both models behave identically" from paired measurements.

    ``anytime_valid`` tests (e-processes) may be evaluated after every new pair and stopped
    whenever the evidence suffices without inflating the error rate.
    """

    outcome: ClassVar[Literal["continuous", "binary", "bounded"]] = "continuous"
    anytime_valid: ClassVar[bool] = False

    @abstractmethod
    def test(
        self,
        base: Sequence[float],
        intervention: Sequence[float],
        alternative: Alternative = "two-sided",
    ) -> PairedTestResult:
        """Test the pairs ``(base[i], intervention[i])`` in the order given."""


class ArmState(StrictModel):
    """What a bandit knows about one arm. ``embedding`` feeds diversity penalties."""

    arm_id: str
    pulls: int = Field(default=0, ge=0)
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0
    embedding: list[float] = Field(default_factory=list)
    active: bool = True


class BanditStrategy(Driver):
    """Chooses which arms to pull next; credits each reward to the arm that was pulled.

    Arms are registered at runtime with :meth:`add_arm` (an optional embedding feeds the
    diversity penalty of batch selection) and retired with :meth:`deactivate_arm`.
    """

    @abstractmethod
    def add_arm(self, arm_id: str, embedding: Sequence[float] | None = None) -> None:
        """Register a new arm (hypothesis, prompt family...); re-adding one is an error."""

    @abstractmethod
    def deactivate_arm(self, arm_id: str) -> None:
        """Stop offering ``arm_id`` (e.g. its hypothesis was decided); its history is kept."""

    @abstractmethod
    def arms(self) -> list[ArmState]:
        """What the strategy knows about every arm, in registration order."""

    @abstractmethod
    def select(self, k: int = 1) -> list[str]:
        """Return up to ``k`` distinct active arm ids to pull this round."""

    @abstractmethod
    def update(self, arm_id: str, reward: float) -> None:
        """Credit ``reward`` to ``arm_id``."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-serialisable state, including the random generator's state."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: Mapping[str, Any]) -> BanditStrategy:
        """Rebuild a strategy that makes the same future choices."""
