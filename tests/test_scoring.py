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


# --- corpus-level CIDEr-D --------------------------------------------------------------------

def test_cider_d_by_hand_and_against_pycocoevalcap():
    from strcvit_bench.evaluation.corpus import cider_d, score_items

    # two items, disjoint words: every n-gram has df 1, idf log 2, and a caption equal to its
    # only reference has cosine 1 at n = 1..4 with no length penalty: 10 × mean(1, 1, 1, 1)
    assert cider_d(["a b c d", "e f g h"], [["a b c d"], ["e f g h"]]) == pytest.approx([10.0, 10.0])
    # one item alone: every n-gram is in every item's references, idf 0, score 0
    assert cider_d(["a b c d"], [["a b c d"]]) == [0.0]
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    gts = {"1": ["a red bus on a street", "the red bus parked by the road"], "2": ["a man holding a sign"],
           "3": ["two dogs play in the snow", "dogs running in snow"], "4": ["a sign that says stop", "stop"],
           "5": ["a cat"]}
    res = {"1": ["a red bus parked on the street"], "2": ["a man with a sign that says sale"], "3": ["dogs"],
           "4": ["stop sign"], "5": [""]}
    expected_mean, expected = cider.Cider().compute_score(gts, res)
    ours = score_items("cider", [res[k][0] for k in gts], [gts[k] for k in gts])
    assert ours == pytest.approx(list(expected), abs=1e-9)
    assert sum(ours) / len(ours) == pytest.approx(expected_mean, abs=1e-9)


def test_score_task_scores_a_corpus_metric_over_the_whole_test_set():
    from strcvit_bench.evaluation.corpus import cider_d
    from strcvit_bench.evaluation.evaluator import score_task

    rows = [{"id": str(i), "answers": [a]} for i, a in enumerate(["a b c d", "e f g h", "a b x y"])]
    preds = ["a b c d", "e f", "a b x y"]
    mean, records = score_task("cider", rows, preds)
    per_item = cider_d(preds, [r["answers"] for r in rows])
    assert [r["score"] for r in records] == pytest.approx(per_item)
    assert mean == pytest.approx(100 * sum(per_item) / 3)
    # the corpus matters: item 0 alone scores differently than among the others
    assert score_task("cider", rows[:1], preds[:1])[1][0]["score"] != pytest.approx(per_item[0])


# --- grounding, classification -------------------------------------------------------------------

def test_bbox_iou_at_the_half_boundary_and_parsing():
    from strcvit_bench.evaluation.scoring import bbox_iou, box_iou

    assert box_iou([0, 0, 1, 1], [0, 0, 0.5, 1]) == pytest.approx(0.5)
    assert bbox_iou("[0.0, 0.0, 1.0, 1.0]", ["[0.0, 0.0, 0.5, 1.0]"]) == 1.0       # IoU 0.5 counts (≥)
    assert bbox_iou("[0.0, 0.0, 1.0, 1.0]", ["[0.0, 0.0, 0.49, 1.0]"]) == 0.0      # 0.49
    assert bbox_iou("The box is (0.1,0.1, 0.5 ,0.5).", ["[0.1, 0.1, 0.5, 0.5]"]) == 1.0
    assert bbox_iou("[0.5, 0.5, 0.1, 0.1]", ["[0.1, 0.1, 0.5, 0.5]"]) == 0.0       # an inverted box covers nothing
    assert bbox_iou("no box", ["[0.1, 0.1, 0.5, 0.5]"]) == 0.0


def test_the_authors_grounding_rule_is_strict_and_keeps_their_parsing():
    from strcvit_bench.evaluation.authors import grounding

    assert grounding("[0.0, 0.0, 1.0, 1.0]", ["[0.0, 0.0, 0.5, 1.0]"]) == 0.0      # IoU 0.5: not > 0.5
    assert grounding("[0.0, 0.0, 1.0, 1.0]", ["[0.0, 0.0, 0.6, 1.0]"]) == 1.0
    # their parser drops a character at each end: "0.61" is read as 0.6, "0.12" as .12
    assert grounding("[0.12, 0.3, 0.5, 0.61]", ["[0.12, 0.3, 0.5, 0.6]"]) == 1.0
    # "[0.1, 0.1, 0.9, 0.3]" is read as .1, 0.1, 0.9, 0. (an empty box): IoU 0
    assert grounding("[0.1, 0.1, 0.9, 0.3]", ["[0.1, 0.1, 0.9, 0.3]"]) == 0.0
    assert grounding("nonsense", ["[0.1, 0.1, 0.9, 0.3]"]) == 0.0


def test_classification_by_label_as_the_authors_score_it():
    from strcvit_bench.evaluation import authors
    from strcvit_bench.evaluation.scoring import classification

    assert classification("a golden retriever", ["golden retriever."]) == 1.0   # label in answer
    assert classification("Retriever", ["golden retriever"]) == 1.0             # answer in label
    assert classification("tabby cat", ["golden retriever"]) == 0.0
    assert classification("", ["golden retriever"]) == 0.0                      # ours: empty is wrong
    assert authors.classification("", ["golden retriever"]) == 1.0              # theirs: contained in any label


def test_the_authors_rules_by_hand():
    from strcvit_bench.evaluation import authors

    assert authors.choice("the answer is b.", ["B"]) == 1.0 and authors.choice("abc", ["b"]) == 1.0
    assert authors.choice("the answer is c", ["b"]) == 0.0
    assert authors.choice("turn left now", ["turn left"]) == 1.0 and authors.choice("Unanswerable", ["x"]) == 0.0
    assert authors.finvis("A .", ["a"]) == 1.0 and authors.finvis("a b", ["a"]) == 0.0
    assert authors.ocrvqa("Harry Potter", ["harry potter"]) == 1.0 and authors.ocrvqa("Harry", ["harry potter"]) == 0.0
    assert authors.chartqa("about 12.5 percent", ["12.5"]) == 0.0  # their rule drops the period: "125"
    assert authors.chartqa("the value is 125", ["12.5"]) == 1.0
    assert authors.vqav2("Two.", ["2"]) == 1.0 and authors.vqav2("3", ["2", "3"]) == 0.0  # the first answer only
    assert authors.task_metric({"name": "VQAv2", "metric": "vqa_accuracy"}, "authors") == "authors.vqav2"
    assert authors.task_metric({"name": "TextCaps", "metric": "cider"}, "authors") == "cider"
    assert authors.task_metric({"name": "shapes", "metric": "exact_match"}, "authors") == "exact_match"
    assert authors.task_metric({"name": "VQAv2", "metric": "vqa_accuracy"}, "default") == "vqa_accuracy"
