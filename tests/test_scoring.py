"""Per-sample metrics against hand-computed values (docs/metrics.md)."""

import pytest

from strcvit_bench.errors import StrcvitError
from strcvit_bench.evaluation.scoring import (
    anls,
    exact_match,
    get_metric,
    levenshtein,
    normalize_vqa_answer,
    relaxed_accuracy,
    vqa_accuracy,
)


def test_vqa_normalisation():
    assert normalize_vqa_answer("The Two  dogs!") == "2 dogs"
    assert normalize_vqa_answer("an apple.") == "apple"
    assert normalize_vqa_answer("Dont") == "don't"
    assert normalize_vqa_answer("1,000") == "1000"


def test_vqa_accuracy_single_reference_is_normalised_exact_match():
    assert vqa_accuracy("Two", ["2"]) == 1.0
    assert vqa_accuracy("three", ["2"]) == 0.0


def test_vqa_accuracy_fewer_than_ten_references_is_any_match():
    # the 3-of-10 consensus rule is not applied to short reference lists
    assert vqa_accuracy("red", ["red", "red", "red"]) == 1.0
    assert vqa_accuracy("Red.", ["blue", "red"]) == 1.0
    assert vqa_accuracy("green", ["blue", "red"]) == 0.0
    assert vqa_accuracy("red", ["red"] * 9) == 1.0


def test_vqa_accuracy_ten_references_leave_one_out():
    # 2 of 10 annotators said "red": each leave-one-out subset that keeps both scores 2/3,
    # the 2 subsets that drop one of them score 1/3 -> (8 * 2/3 + 2 * 1/3) / 10 = 0.6
    refs = ["red", "red"] + ["blue"] * 8
    assert vqa_accuracy("red", refs) == pytest.approx(0.6)
    # 4 matches: every subset has >= 3 matches -> 1.0
    assert vqa_accuracy("red", ["red"] * 4 + ["blue"] * 6) == 1.0
    # 3 matches: 7 subsets keep 3 (1.0), 3 subsets keep 2 (2/3) -> (7 + 2) / 10 = 0.9
    assert vqa_accuracy("red", ["red"] * 3 + ["blue"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("green", refs) == 0.0


def test_levenshtein_and_anls():
    assert levenshtein("kitten", "sitting") == 3
    assert anls("hello", ["hello"]) == 1.0
    # 1 edit in 5 chars -> 0.8
    assert anls("hallo", ["hello"]) == pytest.approx(0.8)
    # best over references; case and whitespace ignored
    assert anls("  HELLO ", ["xyz", "hello"]) == 1.0
    # 3 edits in 5 chars -> 0.4 < 0.5 -> 0
    assert anls("abcde", ["abxyz"]) == 0.0


def test_relaxed_accuracy():
    assert relaxed_accuracy("104", ["100"]) == 1.0  # 4 % off
    assert relaxed_accuracy("106", ["100"]) == 0.0  # 6 % off
    # "50%" is 0.5 (pix2struct), for prediction and reference alike
    assert relaxed_accuracy("50%", ["0.5"]) == 1.0
    assert relaxed_accuracy("0.51", ["50%"]) == 1.0  # 2 % off 0.5
    assert relaxed_accuracy("50%", ["50"]) == 0.0
    assert relaxed_accuracy("12.5 %", ["0.125"]) == 1.0
    assert relaxed_accuracy("0", ["0"]) == 1.0
    assert relaxed_accuracy("0.1", ["0"]) == 0.0
    assert relaxed_accuracy("Yellow", ["yellow"]) == 1.0
    assert relaxed_accuracy("blue", ["yellow"]) == 0.0


def test_exact_match():
    assert exact_match(" Yes ", ["yes"]) == 1.0
    assert exact_match("yes", ["no", "YES"]) == 1.0
    assert exact_match("yes.", ["yes"]) == 0.0


def test_unknown_metric_names_the_allowed_ones():
    with pytest.raises(StrcvitError, match="anls"):
        get_metric("bleu")
