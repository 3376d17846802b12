"""Any Hugging Face image-text-to-text model (Llava, Qwen2-VL, Idefics3/SmolVLM, ...).

The prompt format comes from the processor's chat template, so each family is trained and
evaluated in its own conversation format. Training labels cover the answer (and the end of
turn) only: the prompt length is measured by encoding the prompt alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from strcvit_bench.errors import StrcvitError
from strcvit_bench.models.base import ModelBundle, to_pil


def _messages(instruction: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]


class ProcessorEncoder:
    def __init__(self, processor, max_length: int = 1024):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_length = max_length
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id
        self.eos_token_id = self.tokenizer.eos_token_id

    def _prompt(self, instruction: str) -> str:
        template = getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        if template:
            return self.processor.apply_chat_template(_messages(instruction), add_generation_prompt=True,
                                                      tokenize=False)
        image_token = getattr(self.processor, "image_token", "<image>")
        return f"{image_token}\n{instruction}\n"

    def _instruction(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([r["instruction"] for r in rows], add_special_tokens=False, padding=True,
                             return_tensors="pt")
        return {"instruction_ids": enc["input_ids"], "instruction_mask": enc["attention_mask"]}

    def _encode(self, texts: list[str], rows: list[dict[str, Any]], side: str) -> dict[str, torch.Tensor]:
        self.tokenizer.padding_side = side
        images = [[to_pil(r["image"])] for r in rows]
        return dict(self.processor(text=texts, images=images, padding=True, return_tensors="pt"))

    def train_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [self._prompt(r["instruction"]) for r in rows]
        eos = self.tokenizer.eos_token or ""
        full = [p + r["answer"] + eos for p, r in zip(prompts, rows, strict=True)]
        enc = self._encode(full, rows, "right")
        prompt_lens = [int(x.sum()) for x in self._encode(prompts, rows, "right")["attention_mask"]]
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for k, n in enumerate(prompt_lens):
            labels[k, :n] = -100
        enc["labels"] = labels
        return {**enc, **self._instruction(rows)}

    def prompt_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        enc = self._encode([self._prompt(r["instruction"]) for r in rows], rows, "left")
        return {**enc, **self._instruction(rows)}

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]


def _processor_without_video(name_or_path: str):
    """Image-only processor for families whose processor also wants a video processor.

    Video processors need torchvision, which does not import beside the CPU torch build we
    recommend; image-text training never touches them, so the video slot is left empty.
    """
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    model_type = AutoConfig.from_pretrained(name_or_path).model_type
    base = getattr(transformers, PROCESSOR_MAPPING_NAMES[model_type])

    class ImageOnlyProcessor(base):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    return ImageOnlyProcessor(image_processor=AutoImageProcessor.from_pretrained(name_or_path), tokenizer=tokenizer,
                              video_processor=None, chat_template=getattr(tokenizer, "chat_template", None),
                              **_processor_options(name_or_path, base))


def _processor_options(name_or_path: str, processor_class: type) -> dict[str, Any]:
    """The processor's own settings from processor_config.json (InternVL's image_seq_length,
    Gemma 3's image token count, ...): the ones its constructor takes."""
    import inspect
    import json

    from transformers.utils import cached_file

    path = cached_file(name_or_path, "processor_config.json", _raise_exceptions_for_missing_entries=False)
    if path is None:
        return {}
    saved = json.loads(Path(path).read_text(encoding="utf-8"))
    accepted = set(inspect.signature(processor_class.__init__).parameters) - {"self", "image_processor", "tokenizer",
                                                                             "video_processor", "chat_template"}
    return {k: v for k, v in saved.items() if k in accepted}


def load_processor(name_or_path: str):
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(name_or_path)
    except (ImportError, TypeError, ValueError, AttributeError) as exc:
        if "video" not in str(exc).lower() and "torchvision" not in str(exc).lower():
            raise
        return _processor_without_video(name_or_path)


def load_hf(name_or_path: str, *, dtype: str = "auto", max_new_tokens: int = 32) -> ModelBundle:
    from transformers import AutoModelForImageTextToText

    try:
        processor = load_processor(name_or_path)
        torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                       "float16": torch.float16}[dtype]
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise StrcvitError(
            f"model {name_or_path!r} could not be loaded as an image-text-to-text model: {exc}. Pass `tiny`, a "
            f"local directory saved with save_pretrained, or a Hub id (needs network or a warm HF cache)."
        ) from None
    model.eval()
    family = getattr(model.config, "model_type", "unknown")
    return ModelBundle(model=model, encoder=ProcessorEncoder(processor), name=str(name_or_path), family=family,
                       max_new_tokens=max_new_tokens, info={"model_type": family})
