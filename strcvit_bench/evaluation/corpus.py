"""Corpus-level metrics, and the one entry point that scores a task's predictions.

A per-sample metric scores each prediction alone. A corpus-level metric needs every
prediction and reference of the test set at once — CIDEr-D weights n-grams by how rare they
are among all the test set's references — but still gives each item a score, and the task's
score is their mean. That keeps one shape for everything downstream: the runner's per-item
records, the leaderboard's bootstrap over items (which resamples items with the corpus
statistics held at the full test set's) and the lm-eval export (an aggregation function).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from strcvit_bench.evaluation.scoring import METRICS

Scores = Callable[[Sequence[str], Sequence[Sequence[str]]], list[float]]


class CorpusMetric:
    """A metric computed over the whole test set: `(predictions, references) -> per-item scores`."""

    def __init__(self, name: str, fn: Scores, scale: str):
        self.name, self.fn, self.scale = name, fn, scale

    def __call__(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
        return self.fn(predictions, references)


def score_items(metric: str, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """Each item's score under `metric`, per-sample or corpus-level alike."""
    fn = METRICS.get(metric)
    if isinstance(fn, CorpusMetric):
        return fn(predictions, references)
    return [fn(p, r) for p, r in zip(predictions, references, strict=True)]


# --- CIDEr-D ---------------------------------------------------------------------------------

def _ngrams(text: str, n: int = 4) -> Counter:
    words = text.split()
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def cider_d(predictions: Sequence[str], references: Sequence[Sequence[str]], n: int = 4,
            sigma: float = 6.0) -> list[float]:
    """CIDEr-D (Vedantam et al. 2015) as pycocoevalcap's `Cider` computes it, per item.

    For n = 1..4: TF-IDF vectors of the n-grams (IDF from the number of items whose references
    contain the n-gram, over this corpus), the candidate's counts clipped to each reference's,
    cosine similarity times a Gaussian penalty exp(−Δ²/2σ²) on the length difference Δ (in
    bigrams, as the package counts); averaged over references and n, times 10. Text is split on whitespace, untokenised,
    as the StrCVIT authors' scorer runs it.
    """
    refs = [[_ngrams(r, n) for r in rs] for rs in references]
    df: Counter = Counter()
    for rs in refs:
        df.update({g for r in rs for g in r})
    log_n = math.log(float(len(refs))) if refs else 0.0

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        for gram, tf in counts.items():
            k = len(gram) - 1
            vec[k][gram] = float(tf) * (log_n - math.log(max(1.0, df[gram])))
            norm[k] += vec[k][gram] ** 2
        # the package's "length" counts bigrams (its n-gram index 1), so an empty and a one-word
        # caption have the same length; kept, to give its numbers
        length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
        return vec, [math.sqrt(v) for v in norm], length

    scores = []
    for pred, rs in zip(predictions, refs, strict=True):
        v_h, n_h, len_h = vector(_ngrams(pred, n))
        total = [0.0] * n
        for r in rs:
            v_r, n_r, len_r = vector(r)
            delta = float(len_h - len_r)
            for k in range(n):
                val = sum(min(w, v_r[k].get(g, 0.0)) * v_r[k].get(g, 0.0) for g, w in v_h[k].items())
                if n_h[k] != 0 and n_r[k] != 0:
                    val /= n_h[k] * n_r[k]
                total[k] += val * math.exp(-(delta ** 2) / (2 * sigma ** 2))
        scores.append(10.0 * (sum(total) / n) / len(rs) if rs else 0.0)
    return scores


CIDER = CorpusMetric("cider", cider_d, scale="CIDEr-D × 100 (0–1000)")  # registered in scoring.py
