"""`--scoring authors`: the per-task rules of the StrCVIT authors' released evaluation scripts
(swift/llm/eval/eval_*.py in github.com/chanceche/StrCVIT), so numbers are comparable with
the paper's tables. Our documented metrics stay the default; these reproduce the scripts,
quirks included (each rule says which), on the task names `strcvit import-release` gives.
VQA normalisation is ours (the EvalAI processor's rules); GQA's official script is approximated
by the VQAv2 rule.

| task | script | rule |
|---|---|---|
| vqav2, gqa | eval_vqav2 (GQA: approximated the same way) | VQA-normalised answer == reference |
| ocrvqa | eval_ocrvqa | lower-cased equality; "Unanswerable" in the answer is wrong |
| chartqa | eval_chartqa | the reference, periods removed, is a substring of the answer (case-insensitive) |
| ad, rs | eval_ai2d | multi-word reference: substring; one word: a whole-word occurrence |
| fin | eval_finvis | the answer without spaces and periods equals the reference (lower case) |
| imagenet, places | eval_ImagetNet | label in answer or answer in label (an empty answer counts as right) |
| grounding | eval_grounding | their box parsing (drops one character at each end), IoU > 0.5 |
| textcaps | eval_textcaps_cider | CIDEr-D, untokenised (our `cider`) |
"""

from __future__ import annotations

from collections.abc import Sequence

from strcvit_bench.evaluation.scoring import box_iou, normalize_vqa_answer

SCORING_PROFILES = ("default", "authors")


def _unanswerable(prediction: str) -> bool:
    return "Unanswerable" in prediction


def vqav2(prediction: str, references: Sequence[str]) -> float:
    return float(bool(references) and normalize_vqa_answer(prediction) == normalize_vqa_answer(references[0]))


def ocrvqa(prediction: str, references: Sequence[str]) -> float:
    return float(bool(references) and not _unanswerable(prediction) and prediction.lower() == references[0].lower())


def chartqa(prediction: str, references: Sequence[str]) -> float:
    return float(bool(references) and references[0].replace(".", "").upper() in prediction.upper())


def choice(prediction: str, references: Sequence[str]) -> float:
    """eval_ai2d.py, used for AD and RS."""
    if not references or _unanswerable(prediction):
        return 0.0
    pred, gt = prediction.lower(), references[0].lower()
    if " " in gt:
        return float(gt in pred)
    gt = gt.replace(".", "")
    if " " in pred:
        return float(any(s in pred for s in (" " + gt, gt + " ", gt + ".", gt + ",")))
    return float(gt in pred)


def finvis(prediction: str, references: Sequence[str]) -> float:
    if not references or _unanswerable(prediction):
        return 0.0
    return float(prediction.lower().replace(" ", "").replace(".", "") == references[0].lower())


def classification(prediction: str, references: Sequence[str]) -> float:
    """eval_ImagetNet.py (ImageNet and Places365): either string contains the other; an empty
    answer is contained in every label, so it counts as right there."""
    if not references:
        return 0.0
    label, pred = references[0].replace(".", "").upper(), prediction.upper()
    return float(label in pred or pred in label)


def grounding(prediction: str, references: Sequence[str]) -> float:
    """eval_grounding.py: brackets removed, then one character cut from each end before the
    four comma-separated numbers are read ("[0.12, 0.3, 0.5, 0.61]" is read as .12, 0.3, 0.5,
    0.6); anything else unreadable scores 0; right when IoU > 0.5 (strictly)."""
    if not references:
        return 0.0
    try:
        pred = [float(x) for x in prediction.replace("[", "").replace("]", "")[1:-1].split(",")]
        truth = [float(x) for x in references[0].replace("[", "").replace("]", "").split(",")]
    except ValueError:
        return 0.0
    if len(pred) != 4 or len(truth) != 4:
        return 0.0
    return float(box_iou(pred, truth) > 0.5)


# the release's task names (strcvit import-release) -> their script's rule
AUTHORS_RULES = {
    "vqav2": "authors.vqav2", "gqa": "authors.vqav2", "ocrvqa": "authors.ocrvqa", "chartqa": "authors.chartqa",
    "ad": "authors.choice", "rs": "authors.choice", "fin": "authors.finvis", "imagenet": "authors.classification",
    "places": "authors.classification", "grounding": "authors.grounding", "textcaps": "cider",
    # the same tasks as stream_specs/strcvit.yaml names them
    "driving": "authors.choice", "rsvqa": "authors.choice", "places365": "authors.classification",
}


def task_metric(task: dict, scoring: str) -> str:
    """The metric that scores `task` under a scoring profile (a task the authors' scripts do not
    cover keeps its own metric)."""
    if scoring == "authors":
        return AUTHORS_RULES.get(task["name"].lower(), task["metric"])
    return task["metric"]
