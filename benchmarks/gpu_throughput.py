"""Training and evaluation throughput on a realistic architecture, built from a config with
random weights (nothing is downloaded): Llava-7B-sized or Qwen2-VL-2B-sized, bf16, on a GPU.

For each method (default `lora` and `strlora`, attached through the method API exactly as the
runner does): `--steps` optimiser steps on synthetic batches (one image per sample, a short
instruction and answer), then greedy generation of `--new-tokens` tokens with the KV cache.
Reports samples/s, tokens/s, MFU and peak GPU memory, and writes JSON.

MFU counts 2·N_vision FLOPs per vision token, and 4·N_language per sequence token in training
(forward, plus the backward pass's input gradients: the base weights are frozen, so there are
no weight gradients for them) or 2·N_language in generation; attention and adapter FLOPs are
left out, so MFU is slightly understated. Peak: `--peak-tflops` (default 989, H100/H200 dense
bf16).

    python benchmarks/gpu_throughput.py --arch llava-7b [--methods lora,strlora] [--batch 8] [--json out.json]
    python benchmarks/gpu_throughput.py --arch tiny --device cpu     # smoke runs of the script itself
    python benchmarks/gpu_throughput.py --arch tiny-qwen2vl --device cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from strcvit_bench.env import hardware, library_versions  # noqa: E402
from strcvit_bench.methods import MethodContext  # noqa: E402
from strcvit_bench.methods.registry import get_method, parse_options  # noqa: E402
from strcvit_bench.models.base import ModelBundle, model_inputs  # noqa: E402

TEXT_TOKENS, ANSWER_TOKENS = 48, 16


def build(arch: str):
    """(model, family, image tokens per sample, vision tokens per sample, vision params, language params)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    if arch in ("llava-7b", "tiny"):
        big = arch == "llava-7b"
        vision = CLIPVisionConfig(hidden_size=1024 if big else 128, intermediate_size=4096 if big else 256,
                                  num_hidden_layers=24 if big else 3, num_attention_heads=16 if big else 4,
                                  image_size=336 if big else 48, patch_size=14 if big else 8)
        text = LlamaConfig(hidden_size=4096 if big else 256, intermediate_size=11008 if big else 512,
                           num_hidden_layers=32 if big else 4, num_attention_heads=32 if big else 4,
                           num_key_value_heads=32 if big else 4, vocab_size=32064 if big else 1000,
                           max_position_embeddings=4096)
        patches = (vision.image_size // vision.patch_size) ** 2
        cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=text.vocab_size - 1,
                          vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=patches)
        model = LlavaForConditionalGeneration(cfg)
        n_vis = sum(p.numel() for p in model.model.vision_tower.parameters())
        return model, "llava", patches, patches + 1, n_vis, sum(p.numel() for p in model.parameters()) - n_vis
    if arch in ("qwen2vl-2b", "tiny-qwen2vl"):
        big = arch == "qwen2vl-2b"
        cfg = Qwen2VLConfig(
            vision_config=dict(depth=32 if big else 1, embed_dim=1280 if big else 32, hidden_size=1536 if big else 64,
                               num_heads=16 if big else 2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                               mlp_ratio=4),
            text_config=dict(vocab_size=151936 if big else 1000, hidden_size=1536 if big else 64,
                             intermediate_size=8960 if big else 128, num_hidden_layers=28 if big else 2,
                             num_attention_heads=12 if big else 2, num_key_value_heads=2, max_position_embeddings=32768,
                             rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                              "mrope_section": [16, 24, 24] if big else [4, 6, 6]},
                             **({} if big else {"eos_token_id": 3, "bos_token_id": 2, "pad_token_id": 0})),
            image_token_id=151655 if big else 990, video_token_id=151656 if big else 991,
            vision_start_token_id=151652 if big else 992, vision_end_token_id=151653 if big else 993)
        model = Qwen2VLForConditionalGeneration(cfg)
        n_vis = sum(p.numel() for p in model.model.visual.parameters())
        n_lm = sum(p.numel() for p in model.parameters()) - n_vis
        grid = (448 if big else 56) // 14  # a 448 × 448 image: 32 × 32 patches, merged 2 × 2
        return model, "qwen2_vl", grid * grid // 4, grid * grid, n_vis, n_lm
    raise SystemExit(f"unknown --arch {arch!r}: llava-7b, qwen2vl-2b, tiny, tiny-qwen2vl")


def batch_for(model, family: str, image_tokens: int, B: int, device, train: bool) -> dict[str, torch.Tensor]:
    cfg = model.config
    vocab = cfg.get_text_config().vocab_size
    img = torch.full((B, image_tokens), cfg.image_token_id)
    text = torch.randint(10, vocab - 10, (B, TEXT_TOKENS + (ANSWER_TOKENS if train else 0)))
    ids = torch.cat([img, text], 1)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "instruction_ids": text[:, :TEXT_TOKENS], "instruction_mask": torch.ones(B, TEXT_TOKENS, dtype=torch.long)}
    if train:
        labels = torch.full_like(ids, -100)
        labels[:, -ANSWER_TOKENS:] = ids[:, -ANSWER_TOKENS:]
        batch["labels"] = labels
    if family == "llava":
        size = cfg.vision_config.image_size
        batch["pixel_values"] = torch.randn(B, 3, size, size)
    else:
        grid = int((image_tokens * 4) ** 0.5)
        batch["pixel_values"] = torch.randn(B * grid * grid, 3 * 2 * 14 * 14)
        batch["image_grid_thw"] = torch.tensor([[1, grid, grid]] * B)
        batch["mm_token_type_ids"] = (ids == cfg.image_token_id).long()
    dtype = next(model.parameters()).dtype
    return {k: v.to(device, dtype=dtype if v.is_floating_point() else None) for k, v in batch.items()}


def measure(arch: str, method_name: str, B: int, steps: int, new_tokens: int, device: torch.device,
            peak_tflops: float) -> dict:
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.set_default_dtype(dtype)
    try:
        model, family, image_tokens, vision_tokens, n_vis, n_lm = build(arch)
    finally:
        torch.set_default_dtype(torch.float32)
    model.to(device).eval()
    bundle = ModelBundle(model=model, encoder=None, name=arch, family=family)  # type: ignore[arg-type]
    cls = get_method(method_name)
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=1, chunk_size=B * steps, task_ids_visible=False,
                        lookup_rows=lambda ids: [])
    method = cls(parse_options(cls, {}), ctx)
    params = method.setup()
    opt = torch.optim.AdamW([p for p in params.values() if p.requires_grad], lr=1e-5)
    batch = batch_for(model, family, image_tokens, B, device, train=True)
    seq = batch["input_ids"].shape[1]
    rows = [{} for _ in range(B)]
    model.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            sync()
            start = time.perf_counter()
        method.before_forward(batch, rows)
        loss = method.loss(model(**model_inputs(batch)).loss, batch)
        loss.backward()
        opt.step()
        method.after_step()
        opt.zero_grad(set_to_none=True)
    sync()
    train_s = (time.perf_counter() - start) / steps
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    model.eval()
    prompt = batch_for(model, family, image_tokens, B, device, train=False)
    with torch.no_grad():
        method.before_forward(prompt, rows)
        model.generate(**model_inputs(prompt), max_new_tokens=2, do_sample=False)  # warm-up
        sync()
        start = time.perf_counter()
        method.before_forward(prompt, rows)
        model.generate(**model_inputs(prompt), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False)
        sync()
    gen_s = time.perf_counter() - start
    train_flops = B * (2 * n_vis * vision_tokens + 4 * n_lm * seq)
    gen_flops = B * (2 * n_vis * vision_tokens + 2 * n_lm * (prompt["input_ids"].shape[1] + new_tokens))
    return {
        "arch": arch, "method": method_name, "batch": B, "seq_len": seq, "device": str(device),
        "trainable_params": method.parameter_counts()["trainable"], "params": n_vis + n_lm,
        "train_step_s": train_s, "train_samples_per_s": B / train_s, "train_tokens_per_s": B * seq / train_s,
        "train_mfu": train_flops / train_s / (peak_tflops * 1e12), "train_peak_gib": train_peak,
        "gen_samples_per_s": B / gen_s, "gen_new_tokens_per_s": B * new_tokens / gen_s,
        "gen_mfu": gen_flops / gen_s / (peak_tflops * 1e12),
        "gen_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="llava-7b")
    ap.add_argument("--methods", default="lora,strlora")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in args.methods.split(","):
        rows.append(measure(args.arch, name, args.batch, args.steps, args.new_tokens, device, args.peak_tflops))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    where = hardware().get("cuda_device", "CPU")
    print(f"{args.arch} ({rows[0]['params'] / 1e9:.2f} B params), batch {args.batch}, seq {rows[0]['seq_len']}, "
          f"on {where}")
    print(f"{'method':<9}{'trainable':>12}{'train smp/s':>12}{'train tok/s':>12}{'train MFU':>10}{'peak GiB':>9}"
          f"{'gen smp/s':>10}{'gen tok/s':>10}{'gen MFU':>8}")
    for r in rows:
        peak = "–" if r["train_peak_gib"] is None else f"{r['train_peak_gib']:.1f}"
        print(f"{r['method']:<9}{r['trainable_params']:>12,}{r['train_samples_per_s']:>12.2f}"
              f"{r['train_tokens_per_s']:>12.0f}{100 * r['train_mfu']:>9.1f}%{peak:>9}{r['gen_samples_per_s']:>10.2f}"
              f"{r['gen_new_tokens_per_s']:>10.1f}{100 * r['gen_mfu']:>7.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"results": rows, "hardware": hardware(), "versions": library_versions()},
                                        indent=2))


if __name__ == "__main__":
    main()
