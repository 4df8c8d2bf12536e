"""Parameter importance (``wbsweep.importance``): the parameter that decides the objective leads."""

from __future__ import annotations

import math
import random

import pytest

from wbsweep.importance import importance, ranks, spearman


def _sweep(n: int, seed: int = 0) -> list[dict[str, object]]:
    """``n`` random configurations: a log-scale rate, an optimizer, a width, a dropout."""
    rng = random.Random(seed)
    return [
        {
            "lr": 10 ** rng.uniform(-5, -1),
            "optim": rng.choice(["adamw", "sgd", "adafactor"]),
            "width": rng.choice([16, 32, 64]),
            "dropout": rng.uniform(0.0, 0.5),
        }
        for _ in range(n)
    ]


def _scores(configs: list[dict[str, object]], objectives: list[float]) -> dict[str, float]:
    out = {}
    for name in configs[0]:
        found = importance([c[name] for c in configs], objectives)
        assert found.score is not None, (name, found.reason)
        out[name] = found.score
    return out


@pytest.mark.parametrize("n", [10, 30])
def test_a_rate_with_an_optimum_in_the_middle_is_the_most_important(n: int) -> None:
    configs = _sweep(n)
    # Best at lr = 1e-3, worse either side: no straight trend for a correlation to find.
    objectives = [abs(math.log10(c["lr"]) + 3) for c in configs]  # type: ignore[arg-type]

    scores = _scores(configs, objectives)

    assert max(scores, key=scores.__getitem__) == "lr"
    assert scores["lr"] > 0.4
    assert all(scores[name] < 0.25 for name in ("optim", "width", "dropout")), scores


def test_a_categorical_parameter_that_decides_the_objective_is_the_most_important() -> None:
    configs = _sweep(24, seed=1)
    rng = random.Random(2)
    penalty = {"adamw": 0.0, "sgd": 1.0, "adafactor": 2.0}
    objectives = [penalty[c["optim"]] + rng.uniform(0, 0.3) for c in configs]  # type: ignore[index]

    scores = _scores(configs, objectives)

    assert max(scores, key=scores.__getitem__) == "optim"
    assert scores["optim"] > 0.6
    assert all(scores[name] < 0.25 for name in ("lr", "width", "dropout")), scores


def test_noise_scores_about_zero_whatever_the_number_of_values() -> None:
    rng = random.Random(3)
    objectives = [rng.random() for _ in range(40)]
    for values in (
        [rng.random() for _ in range(40)],  # every run its own value
        [rng.choice("abcdefgh") for _ in range(40)],  # many categories
        [rng.choice([1, 2]) for _ in range(40)],
    ):
        found = importance(values, objectives)
        assert found.score is not None and found.score < 0.15, (values[:3], found)


def test_the_objective_scale_does_not_matter_only_its_order() -> None:
    configs = _sweep(20, seed=4)
    lr = [c["lr"] for c in configs]
    plain = [abs(math.log10(x) + 3) for x in lr]  # type: ignore[arg-type]
    # The same order, and the worst run diverged to a huge loss.
    stretched = [math.exp(5 * v) for v in plain]
    stretched[plain.index(max(plain))] *= 1e9

    assert importance(lr, plain).score == importance(lr, stretched).score


def test_a_constant_parameter_or_too_few_runs_has_no_score_and_says_why() -> None:
    constant = importance([7, 7, 7, 7, 7], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert constant.score is None and constant.reason == "the same value in every run"

    few = importance(["a", "b", "a"], [1.0, 2.0, 3.0])
    assert few.score is None and few.reason == "too few runs (3)"


def test_spearman_gives_the_direction_of_a_numeric_effect() -> None:
    rates = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert spearman(rates, [5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert importance(rates, [1.0, 2.0, 3.0, 4.0, 5.0]).spearman == pytest.approx(1.0)
    assert importance(["a", "b", "a", "b", "a"], [1.0, 2, 3, 4, 5]).spearman is None
    assert ranks([3.0, 1.0, 3.0]) == [2.5, 1.0, 2.5]
