"""Tiny, randomly initialised models of real Hugging Face VLM families, saved to a folder.

The real loading path (`AutoProcessor` / `AutoModelForImageTextToText.from_pretrained`) is
then exercised offline on Llava, Qwen2-VL, Qwen2.5-VL, Idefics3 and the StrCVIT paper's base
families, InternVL3.5 (transformers' format) and Gemma 3, without downloading anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from strcvit_bench.models.tiny import TinyConfig, build_model, build_tokenizer

WORDS = ["what is this image describe a red cat blue dog yes no 1 2 3"]


def _template(user_image: str, start: str, end: str, assistant: str) -> str:
    return ("{% for m in messages %}" + start + "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
            "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + user_image + "{% else %}{{ c['text'] }}"
            "{% endif %}{% endfor %}{% endif %}" + end + "{% endfor %}{% if add_generation_prompt %}" + assistant
            + "{% endif %}")


def save_llava(path: Path) -> Path:
    from transformers import LlavaImageProcessorPil, LlavaProcessor

    tok = build_tokenizer(WORDS)
    tok.chat_template = _template("<image>", "{{ m['role'] }}: ", " ", "assistant:")
    ip = LlavaImageProcessorPil(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          chat_template=tok.chat_template, num_additional_image_tokens=1)
    build_model(TinyConfig(), len(tok), 0).save_pretrained(path)
    proc.save_pretrained(path)
    return path


def _tokenizer(extra: list[str], named: dict[str, str] | None = None, words: list[str] = WORDS):
    """Our word-level test tokenizer with the family's special tokens, named as its processor wants."""
    from transformers import PreTrainedTokenizerFast

    base = build_tokenizer(words)
    return PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", sep_token="[SEP]", padding_side="left",
                                   extra_special_tokens=["<image>", *extra], model_specific_special_tokens=named or {})


QWEN_TOKENS = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]


def _qwen_parts(words: list[str] = WORDS):
    """What Qwen2-VL and Qwen2.5-VL share: the tokenizer and chat template, the language model, the
    image-token ids."""
    tok = _tokenizer(QWEN_TOKENS, words=words)
    tok.chat_template = _template("<|vision_start|><|image_pad|><|vision_end|>", "<|im_start|>{{ m['role'] }}\n",
                                  "<|im_end|>\n", "<|im_start|>assistant\n")
    ids = tok.convert_tokens_to_ids
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=2,
                eos_token_id=3, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]})
    tokens = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                  vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    return tok, text, tokens


def _save_qwen_processor_parts(path: Path, tok, pixels: tuple[int, int] = (28 * 28 * 4, 56 * 56)) -> Path:
    """No processor.save_pretrained: the Qwen processors insist on a (torchvision) video processor;
    the loader rebuilds an image-only processor from these two parts."""
    from transformers import Qwen2VLImageProcessorPil

    tok.save_pretrained(path)
    Qwen2VLImageProcessorPil(min_pixels=pixels[0], max_pixels=pixels[1], patch_size=14, merge_size=2,
                             temporal_patch_size=2).save_pretrained(path)
    return path


def save_qwen2_vl(path: Path, *, words: list[str] = WORDS, text: dict | None = None, vision: dict | None = None,
                  pixels: tuple[int, int] = (28 * 28 * 4, 56 * 56)) -> Path:
    """The test model; `text`, `vision` and `pixels` (min, max) override its sizes (the training
    benchmark builds a 2B-width language model with them)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok, text_cfg, tokens = _qwen_parts(words)
    vision_cfg = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, mlp_ratio=2)
    cfg = Qwen2VLConfig(vision_config={**vision_cfg, **(vision or {})}, text_config={**text_cfg, **(text or {})},
                        **tokens)
    Qwen2VLForConditionalGeneration(cfg).save_pretrained(path)
    return _save_qwen_processor_parts(path, tok, pixels)


def save_idefics3(path: Path) -> Path:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tok = build_tokenizer(WORDS)
    tok.add_special_tokens({"additional_special_tokens": ["<fake_token_around_image>", "<global-img>",
                                                          "<end_of_utterance>"]})
    tok.chat_template = _template("<image>", "{{ m['role'] }}:", "<end_of_utterance>\n", "assistant:")
    ids = tok.convert_tokens_to_ids
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, bos_token_id=2,
                         eos_token_id=3, pad_token_id=0),
        scale_factor=2, image_token_id=ids("<image>"),
    )
    Idefics3ForConditionalGeneration(cfg).save_pretrained(path)
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                                   do_image_splitting=False)
    Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4,
                      chat_template=tok.chat_template).save_pretrained(path)
    return path


def save_qwen2_5_vl(path: Path) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok, text, tokens = _qwen_parts()
    cfg = Qwen2_5_VLConfig(
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, fullatt_block_indexes=[0],
                           window_size=56),
        text_config=text, **tokens)
    Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(path)
    return _save_qwen_processor_parts(path, tok)


def save_internvl(path: Path) -> Path:
    """InternVL3.5 in transformers' format (the -HF checkpoints): a Qwen language model."""
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = _tokenizer([*named.values(), "<|im_start|>", "<|im_end|>"], named)
    tok.chat_template = _template("<IMG_CONTEXT>\n", "<|im_start|>{{ m['role'] }}\n", "<|im_end|>\n",
                                  "<|im_start|>assistant\n")
    cfg = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=[32, 32], patch_size=[8, 8]),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, bos_token_id=2,
                         eos_token_id=3, pad_token_id=0),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5,
    )
    InternVLForConditionalGeneration(cfg).save_pretrained(path)
    # InternVL's processor insists on a (torchvision) video processor: save its parts and its
    # settings; the loader builds an image-only processor from them
    tok.save_pretrained(path)
    GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=False).save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({"processor_class": "InternVLProcessor",
                                                            "image_seq_length": 4}))
    return path


def save_gemma3(path: Path) -> Path:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = _tokenizer([*named.values(), "<start_of_turn>", "<end_of_turn>"], named)
    tok.chat_template = _template("<start_of_image>", "<start_of_turn>{{ m['role'] }}\n", "<end_of_turn>\n",
                                  "<start_of_turn>model\n")
    ids = tok.convert_tokens_to_ids
    cfg = Gemma3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=32, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0, sliding_window=64, max_position_embeddings=256),
        mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    Gemma3ForConditionalGeneration(cfg).save_pretrained(path)
    Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok,
                    image_seq_length=4, chat_template=tok.chat_template).save_pretrained(path)
    return path


FAMILIES = {"llava": save_llava, "qwen2_vl": save_qwen2_vl, "qwen2_5_vl": save_qwen2_5_vl, "idefics3": save_idefics3,
            "internvl": save_internvl, "gemma3": save_gemma3}
