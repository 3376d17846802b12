"""Confidence intervals and paired tests against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strcvit_bench.evaluation.metrics import all_metrics
from strcvit_bench.evaluation.uncertainty import (
    bootstrap_run,
    paired_bootstrap,
    paired_t_test,
    resample_indices,
    resampled_matrices,
    separated,
    t_interval,
)
from strcvit_bench.reports.comparison import average_curve, estimate, paired, seen_average

T_975_DF2 = 4.302652729911275  # Student t quantile, 0.975, 2 degrees of freedom


def test_t_interval_by_hand():
    mean, half = t_interval([1.0, 2.0, 3.0])  # sd 1, n 3
    assert mean == 2.0 and half == pytest.approx(T_975_DF2 / math.sqrt(3))
    assert t_interval([5.0]) == (5.0, None)
    assert t_interval([]) == (None, None)
    assert t_interval([1.0, None, float("nan"), 3.0])[0] == 2.0


def test_paired_t_test_by_hand():
    # differences 2, 3, 4: mean 3, sd 1, t = 3 / (1/√3) = 5.196; two-sided p = 0.0351
    r = paired_t_test([3, 5, 7], [1, 2, 3])
    assert r["mean_diff"] == 3.0 and r["t"] == pytest.approx(3 * math.sqrt(3))
    assert r["p_value"] == pytest.approx(0.035099, abs=1e-5)
    assert r["ci95"] == pytest.approx([3 - T_975_DF2 / math.sqrt(3), 3 + T_975_DF2 / math.sqrt(3)])
    assert paired_t_test([3, 5, 7], [1, 2, 3], "greater")["p_value"] == pytest.approx(0.0175494, abs=1e-6)
    assert paired_t_test([3, 5, 7], [1, 2, 3], "less")["p_value"] == pytest.approx(1 - 0.0175494, abs=1e-6)
    # a constant non-zero difference is certain, a zero one is no evidence
    assert paired_t_test([2, 3], [1, 2])["p_value"] == 0.0
    assert paired_t_test([2, 3], [2, 3])["p_value"] == 1.0
    with pytest.raises(ValueError):
        paired_t_test([1], [2])


def test_separated_needs_an_interval_that_excludes_zero():
    assert separated([0.5, 2.0]) and separated([-3.0, -0.1])
    assert not separated([-0.1, 2.0]) and not separated(None)


def test_resampled_matrices_reuse_the_same_items_after_every_chunk():
    items = [[[1, 0, 0, 0]], [[1, 1, 0, 0]]]  # one task, 4 items, after chunk 0 and 1
    idx = [np.array([[0, 0, 0, 0], [3, 3, 2, 1]])]
    m = resampled_matrices(items, idx)
    assert m.shape == (2, 2, 1)
    assert m[0, :, 0].tolist() == [100.0, 100.0]   # item 0 four times, at both points
    assert m[1, :, 0].tolist() == [0.0, 25.0]      # items 3, 3, 2, 1


def test_bootstrap_run_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    items = [[list(rng.integers(0, 2, 150).astype(float)), list(rng.integers(0, 2, 150).astype(float))]
             for _ in range(3)]
    first = [0, 1]
    a = bootstrap_run(items, first, seed=5)
    assert a == bootstrap_run(items, first, seed=5)
    assert a != bootstrap_run(items, first, seed=6)
    R = [[100 * float(np.mean(task)) for task in row] for row in items]
    point = all_metrics(R, first, [None, None])
    lo, hi = a["metrics_ci95"]["final_average_accuracy"]
    assert lo <= point["final_average_accuracy"] <= hi
    # a 0/1 score over 150 items near 50 %: half-width ≈ 1.96 · 50 / √150 = 8 points
    cell_lo, cell_hi = a["accuracy_matrix_ci95"][2][0]
    assert 5.5 < (cell_hi - cell_lo) / 2 < 10.5
    # the final average over 300 items is tighter than one task
    assert (hi - lo) < (cell_hi - cell_lo)


def _samples_one_by_one(item_scores, base_items, first_seen, indices):
    """The bootstrap's metric samples as defined: `all_metrics` on each resampled matrix alone."""
    mats = resampled_matrices(item_scores, indices)
    bases = resampled_matrices([base_items], indices)[:, 0, :] if base_items is not None else None
    out: dict[str, list[float]] = {}
    for b in range(mats.shape[0]):
        R = [[None if math.isnan(v) else float(v) for v in row] for row in mats[b]]
        base = [None] * len(first_seen) if bases is None else [float(v) for v in bases[b]]
        for name, value in all_metrics(R, first_seen, base).items():
            out.setdefault(name, []).append(math.nan if value is None else value)
    return out


@pytest.mark.parametrize("case", ["plain", "late, empty and unseen tasks", "a NaN item score"])
def test_bootstrap_samples_all_resamples_at_once_are_the_bits_of_one_at_a_time(case):
    from strcvit_bench.evaluation.uncertainty import _metric_samples

    rng = np.random.default_rng(3)
    T, sizes, first = 5, [40, 25, 30, 12], [0, 1, 3, 0]
    if case != "plain":
        sizes, first = [40, 0, 30, 12], [0, 1, 3, None]  # an empty test set; a task never seen
    items = [[list(rng.random(n).round(3)) for n in sizes] for _ in range(T)]  # ANLS-like partial scores
    base = [list(rng.random(n).round(3)) for n in sizes]
    if case == "a NaN item score":  # only the resamples that draw it get NaN cells
        items[2][0][7] = float("nan")
    idx = resample_indices(sizes, 300, 11)
    for base_items in (base, None):
        got = _metric_samples(items, base_items, first, idx)
        want = _samples_one_by_one(items, base_items, first, idx)
        assert sorted(got) == sorted(want)
        for name in want:
            assert got[name].tobytes() == np.asarray(want[name]).tobytes(), name
    if case == "a NaN item score":
        cells = resampled_matrices(items, idx)[:, 2, 0]
        assert 0 < np.isnan(cells).sum() < len(cells)  # the case mixes missing-cell patterns


def test_bootstrap_of_constant_scores_has_no_width():
    items = [[[1.0] * 10], [[0.0] * 10]]
    ci = bootstrap_run(items, [0], seed=0)
    assert ci["accuracy_matrix_ci95"] == [[[100.0, 100.0]], [[0.0, 0.0]]]
    assert ci["metrics_ci95"]["forgetting"] == [100.0, 100.0]


def test_paired_bootstrap():
    same = [[[1, 0, 1, 0, 1, 1, 0, 0]]]
    d = paired_bootstrap(same, same, [0])["final_average_accuracy"]
    assert d["mean_diff"] == 0 and d["ci95"] == [0.0, 0.0] and d["p_value"] == 1.0
    better = [[[1, 1, 1, 1, 1, 1, 1, 0] * 10]]
    worse = [[[1, 0, 0, 0, 0, 0, 0, 0] * 10]]
    d = paired_bootstrap(better, worse, [0], resamples=500)["final_average_accuracy"]
    assert d["mean_diff"] == pytest.approx(75.0) and d["ci95"][0] > 0 and d["p_value"] < 0.01
    with pytest.raises(ValueError):
        paired_bootstrap(better, [[[1, 0]]], [0])


def test_resample_indices_deterministic():
    a, b = resample_indices([3, 5], 4, 1), resample_indices([3, 5], 4, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (4, 3) and a[1].shape == (4, 5) and a[1].max() < 5


def _run(seed: int, final: float, forgetting: float, items=None) -> dict:
    run = {"seed": seed, "metrics": {"final_average_accuracy": final, "mean_average_accuracy": final,
                                     "forgetting": forgetting},
           "tasks": [{"first_seen": 0}], "accuracy_matrix": [[final]]}
    if items is not None:
        run["item_scores"] = {"chunks": items, "base": None, "test_ids_sha256": "x"}
        run["uncertainty"] = bootstrap_run(items, [0], seed=0)
    return run


def test_row_estimates_use_seeds_or_else_test_items():
    three = [_run(s, v, 1.0) for s, v in enumerate([1.0, 2.0, 3.0])]
    e = estimate(three, "final_average_accuracy")
    assert e.basis == "seeds (t)" and e.half == pytest.approx(T_975_DF2 / math.sqrt(3))
    assert e.text() == f"2.00 ± {T_975_DF2 / math.sqrt(3):.2f}"
    one = [_run(0, 50.0, 0.0, items=[[[1, 0] * 20]])]
    e = estimate(one, "final_average_accuracy")
    assert e.basis == "test items (bootstrap)" and e.lo < 50.0 < e.hi and e.text().startswith("50.00 [")


def test_paired_comparison_over_seeds_and_with_one_seed():
    replay = [_run(s, 0, f) for s, f in enumerate([2.0, 3.0, 4.0])]
    lora = [_run(s, 0, f) for s, f in enumerate([5.0, 7.0, 9.0])]
    d = paired(replay, lora)["forgetting"]
    assert d["mean_diff"] == pytest.approx(-4.0) and d["n"] == 3 and d["separated"]  # differences -3, -4, -5
    # seeds are matched by number, not by position
    assert paired(replay[::-1], lora)["forgetting"]["mean_diff"] == pytest.approx(-4.0)
    a = [_run(0, 80.0, 0.0, items=[[[1, 1, 1, 1, 0] * 20]])]
    b = [_run(0, 78.0, 0.0, items=[[[1, 1, 1, 0, 1] * 20]])]
    d = paired(a, b)["final_average_accuracy"]
    assert d["n"] == 1 and "bootstrap" in d["test"] and d["mean_diff"] == 0.0 and not d["separated"]


def test_seen_average_and_its_band():
    R = [[50.0, 0.0], [30.0, 60.0]]
    assert seen_average(R, [0, 1]) == [50.0, 45.0]
    runs = [{"tasks": [{"first_seen": 0}, {"first_seen": 1}], "accuracy_matrix": R, "seed": s} for s in (0, 1)]
    mean, lo, hi = average_curve(runs)
    assert mean == [50.0, 45.0] and lo == mean and hi == mean  # identical seeds: no width
