"""Cumulative regret of the bandit strategies on a 10-armed Bernoulli bandit.

mu = linspace(0.1, 0.9, 10), horizon T = 10,000, one warm-up pull of every arm, regret
= sum_t (mu* - mu_{a_t}) (pseudo-regret, warm-up pulls included), mean over runs. The
reference values (UCB1 ~ 377, Thompson ~ 48, epsilon=0.1 greedy ~ 435; means over 200 runs)
are printed next to ours.

Two implementations are run:

* ``vectorised`` – the drivers' formulas (UCB1 mean + c sqrt(2 ln t / n), Beta(1+S, 1+F)
  Thompson draws, epsilon-greedy with uniform exploration, ties to the lowest index)
  evaluated for all runs at once with numpy, so 200 runs take seconds;
* ``driver`` – the md-framework drivers themselves (``create_driver("bandit_strategy",
  ...)``, one ``select``/``update`` per step), for fewer runs, as a cross-check that the
  drivers reproduce the vectorised numbers.

    python benchmarks/bandit_regret.py                        # 200 vectorised + 5 driver runs
    python benchmarks/bandit_regret.py --runs 200 --driver-runs 0 --markdown
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

REFERENCE = {"ucb": 377.0, "thompson": 48.0, "epsilon_greedy": 435.0}


def vectorised(strategy: str, mu: np.ndarray, horizon: int, runs: int, seed: int,
               epsilon: float = 0.1, c: float = 1.0) -> np.ndarray:
    """Regret of every run (shape (runs,)) for one strategy, all runs in lock-step."""
    stream = sorted(REFERENCE).index(strategy)
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    k = mu.size
    rows = np.arange(runs)
    pulls = np.zeros((runs, k))
    wins = np.zeros((runs, k))
    regret = np.zeros(runs)
    gap = mu.max() - mu
    for arm in range(k):  # warm-up: one pull per arm
        reward = rng.random(runs) < mu[arm]
        pulls[:, arm] += 1
        wins[:, arm] += reward
        regret += gap[arm]
    for t in range(k, horizon):
        means = wins / pulls
        if strategy == "ucb":
            arms = np.argmax(means + c * np.sqrt(2.0 * np.log(t) / pulls), axis=1)
        elif strategy == "thompson":
            arms = np.argmax(rng.beta(1.0 + wins, 1.0 + pulls - wins), axis=1)
        elif strategy == "epsilon_greedy":
            arms = np.argmax(means, axis=1)
            explore = rng.random(runs) < epsilon
            arms = np.where(explore, rng.integers(0, k, size=runs), arms)
        else:
            raise ValueError(strategy)
        reward = rng.random(runs) < mu[arms]
        pulls[rows, arms] += 1
        wins[rows, arms] += reward
        regret += gap[arms]
    return regret


def with_driver(strategy: str, mu: np.ndarray, horizon: int, runs: int,
                seed: int) -> np.ndarray:
    from md_framework.drivers import create_driver

    gap = mu.max() - mu
    out = []
    for run in range(runs):
        bandit = create_driver("bandit_strategy", strategy,
                               {"seed": seed + run, "diversity_weight": 0.0,
                                "exploration_weight": 1.0})
        for arm in range(mu.size):
            bandit.add_arm(str(arm))
        rng = np.random.default_rng(np.random.SeedSequence([seed, run, 7]))
        regret = 0.0
        for _ in range(horizon):  # warm_start=True: the first 10 selections pull each arm
            arm = int(bandit.select(1)[0])
            bandit.update(str(arm), float(rng.random() < mu[arm]))
            regret += gap[arm]
        out.append(regret)
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--driver-runs", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    mu = np.linspace(0.1, 0.9, 10)
    rows = []
    for strategy in ("ucb", "thompson", "epsilon_greedy"):
        start = time.perf_counter()
        reg = vectorised(strategy, mu, args.horizon, args.runs, args.seed)
        seconds = time.perf_counter() - start
        row = {
            "strategy": strategy, "reference": REFERENCE[strategy],
            "vectorised": f"{reg.mean():.1f} ± {reg.std(ddof=1) / np.sqrt(reg.size):.1f}"
                          f" ({args.runs} runs, {seconds:.1f} s)",
            "driver": "not run",
        }
        if args.driver_runs > 0:
            start = time.perf_counter()
            dreg = with_driver(strategy, mu, args.horizon, args.driver_runs, args.seed)
            seconds = time.perf_counter() - start
            se = dreg.std(ddof=1) / np.sqrt(dreg.size) if dreg.size > 1 else float("nan")
            row["driver"] = (f"{dreg.mean():.1f} ± {se:.1f} ({args.driver_runs} runs,"
                             f" {seconds:.0f} s)")
        rows.append(row)
        print(f"{strategy}: done", file=sys.stderr)
    header = ["strategy", "reference", "vectorised (mean ± SE)", "md driver (mean ± SE)"]
    names = {"ucb": "ucb (UCB1, c=1)", "thompson": "thompson (Beta(1,1))",
             "epsilon_greedy": "epsilon_greedy (ε=0.1)"}
    table = [[names[r["strategy"]], f"≈{r['reference']:.0f}", r["vectorised"], r["driver"]]
             for r in rows]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in table:
            print("| " + " | ".join(line) + " |")
    else:
        for line in [header, *table]:
            print("  ".join(line))
    print(f"\nmu=linspace(0.1, 0.9, 10), T={args.horizon}, seed={args.seed}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
