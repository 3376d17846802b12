"""Scoring a model on every task's test set with greedy, batched generation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from strcvit_bench.evaluation.corpus import score_items
from strcvit_bench.evaluation.reuse import EvalReuse
from strcvit_bench.methods.base import Rows, evaluation_row
from strcvit_bench.models.base import ModelBundle, autocast, model_inputs


@torch.no_grad()
def generate_answers(bundle: ModelBundle, rows: Rows, batch_size: int,
                     before_forward: Callable[[dict[str, torch.Tensor], Rows], None] | None = None,
                     precision: str = "fp32", reuse: EvalReuse | None = None) -> list[str]:
    """Greedy decoding with left-padded prompts and the KV cache (transformers' generate).

    The model and the method see each row as a deployed model would (`evaluation_row`: image,
    instruction, opaque id): no answers, no task, no source. `reuse` (one per run) keeps the
    encoded prompts and frozen vision features of rows scored before.
    """

    model, enc = bundle.model, bundle.encoder
    was_training = model.training
    model.eval()
    answers: list[str] = []
    device = next(model.parameters()).device
    for i in range(0, len(rows), batch_size):
        chunk = [evaluation_row(r) for r in rows[i: i + batch_size]]
        if reuse is not None:
            batch = reuse.prompt_batch(chunk, device)
        else:
            batch = {k: v.to(device) for k, v in enc.prompt_batch(chunk).items()}
        if before_forward is not None:
            before_forward(batch, chunk)
        inputs = model_inputs(batch)
        with reuse.features_of(chunk) if reuse is not None else contextlib.nullcontext(), autocast(precision, device):
            out = model.generate(**inputs, max_new_tokens=bundle.max_new_tokens, do_sample=False,
                                 pad_token_id=enc.pad_token_id, eos_token_id=enc.eos_token_id)
        answers.extend(enc.decode(out[:, inputs["input_ids"].shape[1]:]))
    model.train(was_training)
    return answers


def score_task(metric: str, rows: Rows, predictions: list[str]) -> tuple[float, list[dict[str, Any]]]:
    """Mean score in percent, and one record per row (id, prediction, references, score); a
    corpus-level metric (CIDEr-D) scores every row with the whole test set's statistics."""
    scores = score_items(metric, predictions, [list(r["answers"]) for r in rows])
    records = [{"id": row["id"], "prediction": pred, "references": list(row["answers"]), "score": score}
               for row, pred, score in zip(rows, predictions, scores, strict=True)]
    mean = 100.0 * sum(r["score"] for r in records) / len(records) if records else float("nan")
    return mean, records
