"""Bandit strategies that choose which hypotheses (or prompt families) to sample next.

Arms are registered at runtime (:meth:`add_arm`, optionally with an embedding), every
reward is credited to the arm that was pulled (:meth:`update`), and :meth:`select` returns
up to ``k`` distinct active arms per round (batch selection). A small implementation of our
own (MABWiser is unmaintained); the formulas:

* ``ucb`` – UCB1 (Auer, Cesa-Bianchi & Fischer 2002, Machine Learning 47):
  index_a = mean_a + c sqrt(2 ln t / n_a), t = total pulls, c = ``exploration_weight``
  (c = 1 is UCB1; unpulled arms first).
* ``thompson`` – Thompson sampling (Thompson 1933; Agrawal & Goyal 2012, COLT; Russo et al.
  2018, "A tutorial on Thompson sampling"). Rewards in [0, 1]: Beta-Bernoulli posterior
  Beta(a + S_a, b + n_a - S_a) (fractional rewards as fractional counts); otherwise a
  Gaussian posterior for the mean with a N(0, prior_sd^2) prior and the arm's pooled
  variance estimate. ``exploration_weight`` w scales the posterior spread: counts are
  divided by w^2 (Beta) or the sd multiplied by w (Gaussian); w = 0 is greedy on the mean.
* ``epsilon_greedy`` – with probability epsilon * exploration_weight a uniformly random arm,
  otherwise the best mean (Sutton & Barto 2018, section 2.2).

Batch selection with diversity: arms are picked greedily; after each pick every remaining
arm's score is lowered by ``diversity_weight`` x max(0, cosine similarity to the arms
already picked this round) (a maximal-marginal-relevance rule, Carbonell & Goldstein 1998),
so near-duplicate arms are not pulled together. Arms without embeddings get no penalty.

Uncertainty sampling (``selection: uncertainty``): rank arms by how little is known about
them instead of by their score: the UCB bonus sqrt(2 ln t / n_a), the posterior sd, or
1 / sqrt(n_a + 1) for epsilon-greedy.

Rewards from evidence (helpers below):

* :func:`information_gain_reward` – log E_after - log E_before, the growth of the arm's
  hypothesis e-value (its "log-wealth" gain; under the alternative its expectation is the
  KL information gained per sample, Grünwald, de Heide & Koolen 2024, JRSS-B).
* :func:`decision_progress_reward` – the change of clip(log E / log(1/alpha), 0, 1): the
  fraction of the way to the rejection threshold E >= 1/alpha that the pull covered; in
  [-1, 1], 1 meaning the pull completed the decision.

``state()`` is JSON (arms, counters, options and the numpy PCG64 generator's state), and
``from_state`` rebuilds a strategy whose future selections are identical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from md_framework.stats_api import ArmState, BanditStrategy, StatisticsError
from md_framework.types import StrictModel

__all__ = [
    "UCB",
    "EpsilonGreedy",
    "Thompson",
    "decision_progress_reward",
    "information_gain_reward",
    "restore_strategy",
]

STATE_SCHEMA = 1


def information_gain_reward(e_before: float, e_after: float) -> float:
    """log(e_after) - log(e_before): the information the pull added to the arm's e-value.
    Both must be > 0 (e-processes of :mod:`builtin_plugins.stats.paired_tests` are)."""
    if not (e_before > 0 and e_after > 0):
        raise StatisticsError(f"e-values must be positive, got {e_before!r}, {e_after!r}")
    if math.isinf(e_before) or math.isinf(e_after):
        return 0.0 if e_before == e_after else math.copysign(1e300, e_after - e_before)
    return math.log(e_after) - math.log(e_before)


def decision_progress_reward(e_before: float, e_after: float, alpha: float) -> float:
    """Progress towards rejecting at level alpha: f(e_after) - f(e_before) with
    f(E) = clip(log E / log(1/alpha), 0, 1)."""
    if not 0.0 < alpha < 1.0:
        raise StatisticsError(f"alpha must be in (0, 1), got {alpha!r}")

    def progress(e: float) -> float:
        if e < 0 or math.isnan(e):
            raise StatisticsError(f"e-values must be non-negative, got {e!r}")
        if e <= 1.0:
            return 0.0
        return min(1.0, math.log(e) / math.log(1.0 / alpha))

    return progress(e_after) - progress(e_before)


class BanditOptions(StrictModel):
    exploration_weight: float = Field(default=1.0, ge=0.0, description="scales exploration")
    diversity_weight: float = Field(
        default=0.1, ge=0.0, description="penalty x cosine similarity within a batch"
    )
    seed: int = Field(default=0, description="seed of the strategy's random generator")
    selection: Literal["reward", "uncertainty"] = Field(
        default="reward", description="rank by score, or by uncertainty (uncertainty sampling)"
    )
    warm_start: bool = Field(default=True, description="pull every new arm once first")


class _Bandit(BanditStrategy):
    Options: ClassVar[type[StrictModel]] = BanditOptions
    strategy_name: ClassVar[str] = ""

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._arms: dict[str, ArmState] = {}
        self._t = 0
        self._rng = np.random.default_rng(self.options.seed)
        self._reward_min = math.inf
        self._reward_max = -math.inf

    # ----------------------------------------------------------------- arms

    def add_arm(self, arm_id: str, embedding: Sequence[float] | None = None) -> None:
        if arm_id in self._arms:
            raise StatisticsError(f'arm "{arm_id}" is already registered')
        vector = [float(v) for v in (embedding if embedding is not None else [])]
        if not all(math.isfinite(v) for v in vector):
            raise StatisticsError(f'embedding of arm "{arm_id}" must be finite')
        self._arms[arm_id] = ArmState(arm_id=arm_id, embedding=vector)

    def deactivate_arm(self, arm_id: str) -> None:
        self._arm(arm_id).active = False

    def arms(self) -> list[ArmState]:
        return [arm.model_copy(deep=True) for arm in self._arms.values()]

    def _arm(self, arm_id: str) -> ArmState:
        try:
            return self._arms[arm_id]
        except KeyError:
            raise StatisticsError(f'unknown arm "{arm_id}"; register it with add_arm') from None

    @property
    def total_pulls(self) -> int:
        return self._t

    # ----------------------------------------------------------------- learning

    def update(self, arm_id: str, reward: float) -> None:
        arm = self._arm(arm_id)
        reward = float(reward)
        if not math.isfinite(reward):
            raise StatisticsError(f"reward must be finite, got {reward!r}")
        arm.pulls += 1
        arm.reward_sum += reward
        arm.reward_sq_sum += reward * reward
        self._t += 1
        self._reward_min = min(self._reward_min, reward)
        self._reward_max = max(self._reward_max, reward)

    # ----------------------------------------------------------------- selection

    def _scores(self, arms: list[ArmState]) -> np.ndarray:  # pragma: no cover - abstract
        raise TypeError

    def _uncertainty(self, arms: list[ArmState]) -> np.ndarray:  # pragma: no cover
        raise TypeError

    def _explore_probability(self) -> float:
        return 0.0

    @staticmethod
    def _means(arms: list[ArmState]) -> np.ndarray:
        pulls = np.array([a.pulls for a in arms], dtype=float)
        sums = np.array([a.reward_sum for a in arms], dtype=float)
        return np.divide(sums, pulls, out=np.zeros_like(sums), where=pulls > 0)

    def select(self, k: int = 1) -> list[str]:
        if k < 1:
            raise StatisticsError(f"k must be at least 1, got {k}")
        active = [a for a in self._arms.values() if a.active]
        if not active:
            return []
        k = min(k, len(active))
        if self.options.selection == "uncertainty":
            scores = np.asarray(self._uncertainty(active), dtype=float)
        else:
            scores = np.asarray(self._scores(active), dtype=float)
        if self.options.warm_start:
            unpulled = np.array([a.pulls == 0 for a in active])
            scores = np.where(unpulled, np.inf, scores)
        remaining = list(range(len(active)))
        chosen: list[int] = []
        penalty = np.zeros(len(active))
        unit = self._unit_embeddings(active) if self.options.diversity_weight > 0 else None
        explore = self._explore_probability()
        for _ in range(k):
            warming = bool(np.isposinf(scores[remaining]).any())  # unpulled arms first
            if explore > 0 and not warming and self._rng.random() < explore:
                pick = remaining[int(self._rng.integers(len(remaining)))]
            else:
                adjusted = scores[remaining] - penalty[remaining]
                pick = remaining[int(np.argmax(adjusted))]  # ties: registration order
            chosen.append(pick)
            remaining.remove(pick)
            if unit is not None and unit[pick] is not None:
                for j in remaining:
                    if unit[j] is not None and unit[j].shape == unit[pick].shape:
                        similarity = max(0.0, float(unit[j] @ unit[pick]))
                        penalty[j] = max(penalty[j],
                                         self.options.diversity_weight * similarity)
        return [active[i].arm_id for i in chosen]

    @staticmethod
    def _unit_embeddings(arms: list[ArmState]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for arm in arms:
            v = np.asarray(arm.embedding, dtype=float)
            norm = float(np.linalg.norm(v)) if v.size else 0.0
            out.append(v / norm if norm > 0 else None)
        return out

    # ----------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "strategy": self.strategy_name,
            "options": self.options.model_dump(mode="json"),
            "arms": [arm.model_dump(mode="json") for arm in self._arms.values()],
            "total_pulls": self._t,
            "reward_range": (None if self._t == 0
                             else [self._reward_min, self._reward_max]),
            "rng": _jsonable(self._rng.bit_generator.state),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BanditStrategy:
        if not isinstance(state, Mapping) or state.get("schema") != STATE_SCHEMA:
            raise StatisticsError("not a bandit state (schema 1 expected)")
        if state.get("strategy") != cls.strategy_name:
            raise StatisticsError(
                f'state of strategy "{state.get("strategy")}" cannot restore'
                f' "{cls.strategy_name}"'
            )
        strategy = cls(state.get("options") or {})
        for raw in state.get("arms", []):
            arm = ArmState.model_validate(raw)
            strategy._arms[arm.arm_id] = arm
        strategy._t = int(state.get("total_pulls", 0))
        if state.get("reward_range"):
            strategy._reward_min, strategy._reward_max = map(float, state["reward_range"])
        rng_state = state.get("rng")
        if rng_state is not None:
            if rng_state.get("bit_generator") != "PCG64":
                raise StatisticsError("bandit state: unsupported random generator")
            strategy._rng.bit_generator.state = rng_state
        return strategy


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


class UCB(_Bandit):
    """UCB1 (Auer et al. 2002) with the bonus scaled by ``exploration_weight``."""

    description = "UCB1 upper-confidence-bound bandit (default)"
    strategy_name = "ucb"

    def _bonus(self, arms: list[ArmState]) -> np.ndarray:
        pulls = np.array([a.pulls for a in arms], dtype=float)
        log_t = math.log(max(self._t, 1))
        with np.errstate(divide="ignore"):
            return np.where(pulls > 0, np.sqrt(2.0 * log_t / np.maximum(pulls, 1)), np.inf)

    def _scores(self, arms: list[ArmState]) -> np.ndarray:
        bonus = self._bonus(arms)
        c = self.options.exploration_weight
        return self._means(arms) + np.where(np.isinf(bonus), np.inf, c * bonus)

    def _uncertainty(self, arms: list[ArmState]) -> np.ndarray:
        return self._bonus(arms)


class ThompsonOptions(BanditOptions):
    likelihood: Literal["auto", "bernoulli", "gaussian"] = Field(
        default="auto", description="auto: Beta-Bernoulli while all rewards lie in [0, 1]"
    )
    prior_a: float = Field(default=1.0, gt=0.0, description="Beta prior a")
    prior_b: float = Field(default=1.0, gt=0.0, description="Beta prior b")
    prior_sd: float = Field(default=1.0, gt=0.0, description="Gaussian prior sd of a mean")


class Thompson(_Bandit):
    """Thompson sampling: Beta-Bernoulli for rewards in [0, 1], Gaussian otherwise."""

    Options = ThompsonOptions
    description = "Thompson sampling (Beta-Bernoulli or Gaussian posterior)"
    strategy_name = "thompson"

    def _bernoulli(self) -> bool:
        like = self.options.likelihood
        if like != "auto":
            return like == "bernoulli"
        return self._t == 0 or (self._reward_min >= 0.0 and self._reward_max <= 1.0)

    def _posterior(self, arms: list[ArmState]) -> tuple[np.ndarray, np.ndarray]:
        """(posterior mean, posterior sd) of every arm's mean reward."""
        pulls = np.array([a.pulls for a in arms], dtype=float)
        sums = np.array([a.reward_sum for a in arms], dtype=float)
        if self._bernoulli():
            a = self.options.prior_a + sums
            b = self.options.prior_b + pulls - sums
            mean = a / (a + b)
            return mean, np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        sq = np.array([a.reward_sq_sum for a in arms], dtype=float)
        prior_var = self.options.prior_sd ** 2
        means = np.divide(sums, pulls, out=np.zeros_like(sums), where=pulls > 0)
        ss = np.maximum(sq - pulls * means**2, 0.0)
        noise_var = (prior_var + ss) / (pulls + 1.0)  # pooled with one prior pseudo-obs
        precision = 1.0 / prior_var + pulls / noise_var
        return (sums / noise_var) / precision, np.sqrt(1.0 / precision)

    def _scores(self, arms: list[ArmState]) -> np.ndarray:
        w = self.options.exploration_weight
        if w == 0:
            return self._posterior(arms)[0]
        if self._bernoulli():
            pulls = np.array([a.pulls for a in arms], dtype=float)
            sums = np.array([a.reward_sum for a in arms], dtype=float)
            scale = 1.0 / (w * w)
            return self._rng.beta(self.options.prior_a + sums * scale,
                                  self.options.prior_b + (pulls - sums) * scale)
        mean, sd = self._posterior(arms)
        return self._rng.normal(mean, w * sd)

    def _uncertainty(self, arms: list[ArmState]) -> np.ndarray:
        return self._posterior(arms)[1]


class EpsilonGreedyOptions(BanditOptions):
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0, description="exploration rate")


class EpsilonGreedy(_Bandit):
    """epsilon-greedy: explore uniformly with probability epsilon x exploration_weight."""

    Options = EpsilonGreedyOptions
    description = "epsilon-greedy bandit"
    strategy_name = "epsilon_greedy"

    def _explore_probability(self) -> float:
        if self.options.selection == "uncertainty":
            return 0.0
        return min(1.0, self.options.epsilon * self.options.exploration_weight)

    def _scores(self, arms: list[ArmState]) -> np.ndarray:
        return self._means(arms)

    def _uncertainty(self, arms: list[ArmState]) -> np.ndarray:
        return 1.0 / np.sqrt(np.array([a.pulls for a in arms], dtype=float) + 1.0)


STRATEGIES: dict[str, type[_Bandit]] = {
    cls.strategy_name: cls for cls in (UCB, Thompson, EpsilonGreedy)
}


def restore_strategy(state: Mapping[str, Any]) -> BanditStrategy:
    """Rebuild whichever strategy wrote ``state`` (through the driver registry)."""
    from md_framework.drivers import load_driver_class

    if not isinstance(state, Mapping) or "strategy" not in state:
        raise StatisticsError("not a bandit state: it has no 'strategy' key")
    cls = load_driver_class("bandit_strategy", str(state["strategy"]))
    return cls.from_state(state)  # type: ignore[attr-defined]
