"""What differs between vision-language model families, in one table.

Methods and the trainer never name a family: they read the bundle. What a family decides is
here — which module bridges vision to language (the projector: trained with the adapters, and
its *input*, the frozen vision tower's features, is the image view that BranchLoRA and CRAM
route on) and which transformers `model_type`s belong to it. Adding a family is one
`FAMILIES.register` line (or a `strcvit_bench.model_families` entry point) plus a tiny
config-built model in tests/hf_families.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from strcvit_bench.registry import Registry


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    projector: str  # regex of the projector module's last name part(s), e.g. `visual\.merger`
    # regex of the frozen vision tower's last name part(s), when it is a module of its own whose
    # output feeds the projector ("" when the projector is inside it, as in Qwen2-VL's `visual`):
    # evaluation reuses its output for the same test images (evaluation/reuse.py)
    vision_tower: str = ""

    def projector_module(self) -> str:
        """Full-name regex of the projector module (its input is the frozen image view)."""
        return rf"(.*\.)?({self.projector})"


FAMILIES: Registry[Family] = Registry("model family", entry_point_group="strcvit_bench.model_families")
FAMILIES.register("llava", Family("llava", ("llava", "llava_next"), "multi_modal_projector",  # and the tiny default
                                  "vision_tower"))
FAMILIES.register("idefics3", Family("idefics3", ("idefics3", "smolvlm"), "connector", "vision_model"))
FAMILIES.register("qwen2_vl", Family("qwen2_vl", ("qwen2_vl",), r"visual\.merger"))
FAMILIES.register("qwen2_5_vl", Family("qwen2_5_vl", ("qwen2_5_vl",), r"visual\.merger"))
# the StrCVIT paper's base models: InternVL3.5 (transformers' -HF format) and Gemma 3
FAMILIES.register("internvl", Family("internvl", ("internvl",), "multi_modal_projector", "vision_tower"))
FAMILIES.register("gemma3", Family("gemma3", ("gemma3",), "multi_modal_projector", "vision_tower"))


def family_of(model_type: str) -> Family:
    """The family of a transformers `model_type`; an unknown type gets every known projector name."""
    for _, family in FAMILIES.items():
        if model_type in family.model_types:
            return family
    return Family(model_type, (model_type,), "|".join(_projector_names()))


def _projector_names() -> list[str]:
    return list(dict.fromkeys(f.projector for _, f in FAMILIES.items()))  # each name once, in order


def projector_parameters() -> str:
    """The default regex of the projector parameters trained with the adapters (any family)."""
    return r".*(" + "|".join(_projector_names()) + r")\..*"


# Adapters go on the language model's linear layers only (never the vision tower unless asked).
DEFAULT_TARGET = r".*(language_model|text_model)\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$"
# Projectors (the vision-to-language bridge) are trained fully and carried between chunks.
DEFAULT_PROJECTOR = projector_parameters()


def projector_module_name(model, family: Family) -> str | None:
    """The first module of `model` that is the family's projector, or None."""
    rx = re.compile(family.projector_module())
    return next((n for n, _ in model.named_modules() if rx.fullmatch(n)), None)
