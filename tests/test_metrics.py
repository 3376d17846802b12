"""Continual-learning metrics on hand-computed matrices (docs/metrics.md)."""

import pytest

from strcvit_bench.evaluation import metrics as M

# 3 chunks x 3 tasks; task C never appears in the stream (first_seen None)
R = [[50, 10, 5],
     [40, 80, 5],
     [30, 70, 6]]
FIRST = [0, 1, None]
BASE = [10, 12, 4]


def test_final_and_mean_average_accuracy():
    assert M.final_average_accuracy(R, FIRST) == pytest.approx((30 + 70) / 2)
    # t=0: A only (50); t=1: A,B (40+80)/2 = 60; t=2: (30+70)/2 = 50
    assert M.mean_average_accuracy(R, FIRST) == pytest.approx((50 + 60 + 50) / 3)


def test_bwt_forgetting_plasticity_fwt():
    assert M.backward_transfer(R, FIRST) == pytest.approx(((30 - 50) + (70 - 80)) / 2)
    assert M.forgetting(R, FIRST) == pytest.approx(((50 - 30) + (80 - 70)) / 2)
    assert M.plasticity(R, FIRST) == pytest.approx((50 + 80) / 2)
    # only B arrives after chunk 0: R[0][B] - base[B] = 10 - 12
    assert M.forward_transfer(R, FIRST, BASE) == pytest.approx(-2)


def test_paper_aggregates_map_and_maf():
    per_chunk = [(50 + 10 + 5) / 3, (40 + 80 + 5) / 3, (30 + 70 + 6) / 3]
    assert M.mean_average_performance(R) == pytest.approx(sum(per_chunk) / 3)
    # A: t=1 -> 50-40=10, t=2 -> 50-30=20; B: t=2 -> 80-70=10
    assert M.mean_average_forgetting(R, FIRST) == pytest.approx((10 + 20 + 10) / 3)


def test_recurring_task_bwt_and_forgetting_differ():
    # a task seen at chunk 0, forgotten, recurring at chunk 2
    R2 = [[30], [20], [60], [50]]
    assert M.backward_transfer(R2, [0]) == pytest.approx(20)   # 50 - 30: better than when first seen
    assert M.forgetting(R2, [0]) == pytest.approx(10)          # 60 (best so far) - 50
    assert M.mean_average_forgetting(R2, [0]) == pytest.approx((10 + 0 + 10) / 3)


def test_late_task_and_missing_scores():
    R3 = [[10, None], [20, 40], [30, 50]]
    first = [0, 1]
    assert M.final_average_accuracy(R3, first) == pytest.approx(40)
    assert M.forgetting(R3, first) == pytest.approx(-10)        # both only improved: not floored (only MAF is)
    assert M.backward_transfer(R3, first) == pytest.approx(((30 - 10) + (50 - 40)) / 2)
    assert M.forgetting_matrix(R3, first) == [[None, None], [-10, None], [-10, -10]]


def test_first_seen_from_counts():
    counts = [{"a": 5}, {"a": 1, "b": 4}, {"b": 5}]
    assert M.first_seen_from_counts(["a", "b", "c"], counts) == [0, 1, None]


def test_single_chunk():
    got = M.all_metrics([[10.0, 20.0]], [0, 0], [0.0, 0.0])
    assert got["final_average_accuracy"] == 15 and got["bwt"] is None and got["forgetting"] is None
