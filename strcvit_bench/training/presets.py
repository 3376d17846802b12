"""Named settings for `strcvit run --preset NAME`: a whole published protocol in one word.

A preset fills what the command line leaves unset (any explicit option or `--opt` wins), for
the run and for the method's options the method has.
"""

from __future__ import annotations

from typing import Any

from strcvit_bench.errors import StrcvitError

# The StrCVIT authors' training scripts (scripts/Train_intervl/*/train_start.sh, train_strcvit.sh):
# LoRA rank 4 experts x 16 (64 in all) with alpha 128 and dropout 0.05; lr 1e-4 with a cosine
# decay and 5 % warm-up on the first chunk, 2e-5 constant after; weight decay 0.1; the projector
# (their "aligner") at 1e-5; 32 samples a step; bf16.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "authors": {
        "run": {"lr": 1e-4, "lr_later": 2e-5, "warmup": 0.05, "weight_decay": 0.1, "projector_lr": 1e-5,
                "batch_size": 32, "precision": "bf16"},
        "method": {"rank": 64, "alpha": 128.0, "dropout": 0.05, "experts": 4},
    },
}


def apply_preset(name: str | None, run: dict[str, Any], method_fields: list[str],
                 method_options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run values, method options) with the preset under the explicit ones."""
    if name is None:
        return run, method_options
    if name not in PRESETS:
        raise StrcvitError(f"--preset {name!r}: unknown; available: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    method = {k: v for k, v in preset["method"].items() if k in method_fields}
    return {**preset["run"], **run}, {**method, **method_options}
