"""Per-sample scoring functions (docs/metrics.md).

Each metric is a pure function `(prediction, references) -> float in [0, 1]`, so that a
prediction file can be re-scored offline and the same functions serve the runner, lm-eval
and the tests. The registry `METRICS` is what stream specs name (`@METRICS.register(name)`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from strcvit_bench.registry import Registry

MetricFn = Callable[[str, Sequence[str]], float]
# name -> metric function; a plugin package adds one through the `strcvit_bench.metrics` entry points
METRICS: Registry[MetricFn] = Registry("metric", entry_point_group="strcvit_bench.metrics")

# --- VQA answer normalisation (the VQAv2/TextVQA evaluation rules) -------------------------

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "im": "i'm", "ive": "i've", "isnt": "isn't", "itd": "it'd", "itll": "it'll",
    "lets": "let's", "mightnt": "mightn't", "mustnt": "mustn't", "shant": "shan't", "shed": "she'd",
    "shes": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "thats": "that's",
    "thered": "there'd", "theres": "there's", "theyd": "they'd", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "wasnt": "wasn't", "wed": "we'd", "weve": "we've",
    "werent": "weren't", "whats": "what's", "whered": "where'd", "wheres": "where's", "whod": "who'd",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "yall": "y'all", "youd": "you'd", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
VQA_CONSENSUS_REFERENCES = 10
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
          ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def normalize_vqa_answer(text: str) -> str:
    """Lowercase, strip punctuation, map number words to digits, drop articles, fix contractions."""
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or re.search(_COMMA_STRIP, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out)
    words = []
    for word in out.split():
        word = _NUMBER_WORDS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


@METRICS.register("vqa_accuracy")
def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQAv2 accuracy: mean over leave-one-out reference subsets of min(1, matches / 3).

    The min(1, matches/3) rule is a consensus rule of ten human annotators; it is only defined
    for the VQAv2/TextVQA ten references (we apply it from ten on). With fewer references —
    GQA's one answer, a generator's synonyms — a match with any reference after normalisation
    scores 1; otherwise three identical references would cap a right answer at 0.667.
    """
    if not references:
        return 0.0
    pred = normalize_vqa_answer(prediction)
    refs = [normalize_vqa_answer(r) for r in references]
    if len(refs) < VQA_CONSENSUS_REFERENCES:
        return float(pred in refs)
    scores = []
    for i in range(len(refs)):
        others = refs[:i] + refs[i + 1:]
        scores.append(min(1.0, sum(r == pred for r in others) / 3.0))
    return sum(scores) / len(scores)


# --- ANLS ---------------------------------------------------------------------------------

def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _anls_norm(text: str) -> str:
    return " ".join(text.strip().lower().split())


@METRICS.register("anls")
def anls(prediction: str, references: Sequence[str], threshold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity (max over references; below 0.5 counts 0)."""
    pred = _anls_norm(prediction)
    best = 0.0
    for ref in references:
        ref = _anls_norm(ref)
        longest = max(len(pred), len(ref))
        sim = 1.0 if longest == 0 else 1.0 - levenshtein(pred, ref) / longest
        best = max(best, sim)
    return best if best >= threshold else 0.0


# --- relaxed accuracy (ChartQA) --------------------------------------------------------------

def _to_float(text: str) -> float | None:
    """A number, with "50%" read as 0.5 (pix2struct's ChartQA convention, for prediction and
    reference alike: a chart labelled in percent is answered either way)."""
    text = text.strip().replace(",", "")
    scale = 1.0
    if text.endswith("%"):
        text, scale = text[:-1].strip(), 0.01
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@METRICS.register("relaxed_accuracy")
def relaxed_accuracy(prediction: str, references: Sequence[str], tolerance: float = 0.05) -> float:
    """Numbers within `tolerance` relative error count as correct; other answers need exact match."""
    pred_num = _to_float(prediction)
    for ref in references:
        ref_num = _to_float(ref)
        if pred_num is not None and ref_num is not None:
            if ref_num == 0.0:
                if pred_num == 0.0:
                    return 1.0
            elif abs(pred_num - ref_num) / abs(ref_num) <= tolerance:
                return 1.0
        elif prediction.strip().lower() == ref.strip().lower():
            return 1.0
    return 0.0


# --- exact match ----------------------------------------------------------------------------

@METRICS.register("exact_match")
def exact_match(prediction: str, references: Sequence[str]) -> float:
    """Case-insensitive, whitespace-stripped equality with any reference."""
    pred = prediction.strip().lower()
    return float(any(pred == r.strip().lower() for r in references))


def get_metric(name: str) -> MetricFn:
    return METRICS.get(name)


# --- grounding: IoU of boxes ------------------------------------------------------------------

_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")


def parse_box(text: str) -> list[float] | None:
    """The first four numbers of `text` as [x1, y1, x2, y2], or None."""
    numbers = [float(x) for x in _NUMBER.findall(text)[:4]]
    return numbers if len(numbers) == 4 and all(math.isfinite(v) for v in numbers) else None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 for an empty union)."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@METRICS.register("bbox_iou")
def bbox_iou(prediction: str, references: Sequence[str], threshold: float = 0.5) -> float:
    """1 when the predicted box overlaps a reference box with IoU ≥ 0.5 (RefCOCO's accuracy).

    Boxes are [x1, y1, x2, y2] normalised to the square-padded image, the StrCVIT release's
    convention for both the answer and the model's output (its eval_grounding.py compares them
    after scaling both by the longer side, which leaves the IoU unchanged, so the image size
    does not enter). A box with x2 ≤ x1 or y2 ≤ y1 covers nothing; an unparsable answer scores 0.
    """
    pred = parse_box(prediction)
    if pred is None or pred[2] <= pred[0] or pred[3] <= pred[1]:
        return 0.0
    boxes = [b for b in (parse_box(r) for r in references) if b is not None]
    return float(any(box_iou(pred, b) >= threshold for b in boxes))


# --- classification by label (ImageNet, Places365) ----------------------------------------------

@METRICS.register("classification")
def classification(prediction: str, references: Sequence[str]) -> float:
    """The StrCVIT authors' label rule: right when the label (its periods removed) contains the
    answer or the answer contains the label, case-insensitively ("a golden retriever" for
    "golden retriever"). Unlike their script, an empty answer is wrong, not contained in every label."""
    pred = prediction.strip().upper()
    if not pred:
        return 0.0
    return float(any(label in pred or pred in label for label in (r.replace(".", "").strip().upper()
                                                                   for r in references) if label))


# metrics defined in modules of their own, imported on first use: corpus-level CIDEr-D, and the
# rules of the StrCVIT authors' evaluation scripts (`--scoring authors`)
METRICS.register("cider", "strcvit_bench.evaluation.corpus:CIDER")
for _rule in ("vqav2", "ocrvqa", "chartqa", "choice", "finvis", "classification", "grounding"):
    METRICS.register(f"authors.{_rule}", f"strcvit_bench.evaluation.authors:{_rule}")
