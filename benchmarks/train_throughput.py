"""Training throughput per method on the tiny model, and our LoRA layer against peft's.

1. For each method: train one demo chunk (chunk 2 of the demo stream, three task families)
   from the same pre-trained tiny base, with the state a method has mid-stream (a warm replay
   buffer, an EWC penalty, BranchLoRA's and CRAM's clusters, routers and experts from a first
   chunk); samples/s and step time relative to `lora` (the chunk's time over its steps, so a
   method's own per-chunk work, such as clustering or consolidation, is included), trained and
   adapter parameters, peak RSS of the process. Methods run round-robin for `--rounds` rounds
   and the medians are reported with the range of the per-round ratios: on a shared machine
   one pass per method gave ratios that moved by 0.1-0.3 between consecutive runs.
2. Our `LoRALinear` against peft's LoRA on the same tiny model, same target layers, rank, batch
   and optimiser: median step time over repeated steps, interleaved so both see the same
   machine state.

`--arch qwen2vl-2b-width --layers 2` runs part 1 on the width users train instead: a Qwen2-VL
built from a config (random weights, nothing downloaded) with Qwen2-VL-2B's language width
(hidden 1536, MLP 8960, 12 heads / 2 KV heads), `--layers` decoder layers, one vision layer of
the 2B's width (1280) and 64 image tokens a sample (224 px), loaded through the real Hugging
Face path (processor, chat template) and trained by the real runner's `train_chunk` on the
first `--rows` rows of the chunk (EWC's Fisher, per-chunk work, on the same share of its 128
samples: 6 for 48 of the chunk's 1,000 rows). The vocabulary is the stream's words (a
word-level tokenizer), not Qwen's 151,936 tokens: the frozen output layer is small, so the
base's share of a step is understated and the methods' ratios to LoRA are, if anything,
overstated.

    python benchmarks/train_throughput.py [--stream DIR] [--rounds 3] [--json out.json]
    python benchmarks/train_throughput.py --arch qwen2vl-2b-width --layers 2 --rows 48 --rounds 2

Needs a built demo stream (default runs/demo/stream; `strcvit demo` or
`strcvit build-stream stream_specs/demo.yaml --out runs/demo/stream`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from strcvit_bench.env import git_commit, hardware, library_versions  # noqa: E402
from strcvit_bench.methods import MethodContext  # noqa: E402
from strcvit_bench.methods.registry import get_method, methods, parse_options  # noqa: E402
from strcvit_bench.models.base import model_inputs  # noqa: E402
from strcvit_bench.models.tiny import load_tiny  # noqa: E402
from strcvit_bench.streams.stream import open_stream  # noqa: E402
from strcvit_bench.training.config import RunConfig  # noqa: E402
from strcvit_bench.training.rows import RowStore  # noqa: E402
from strcvit_bench.training.setup import stream_texts  # noqa: E402
from strcvit_bench.training.trainer import train_chunk  # noqa: E402

ARCHES = ("tiny", "qwen2vl-2b-width")


def recorded_env() -> dict:
    """What a result file records beside its figures: the machine, the libraries, the commit."""
    return {"hardware": hardware(), "versions": library_versions(("torch", "transformers")),
            "commit": git_commit(ROOT)}


def save_wide_qwen2_vl(stream, path: Path, layers: int) -> Path:
    """Qwen2-VL at the 2B language width, `layers` decoder layers, the stream's words as vocabulary."""
    from strcvit_bench.models.tiny import generator_corpus
    from tests.hf_families import save_qwen2_vl

    torch.manual_seed(0)
    return save_qwen2_vl(
        path, words=[*generator_corpus(), *stream_texts(stream)],
        text=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=layers, num_attention_heads=12,
                  num_key_value_heads=2, max_position_embeddings=4096,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision=dict(depth=1, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4),
        pixels=(224 * 224, 224 * 224))


def fresh_bundle(stream, model_path: Path | None = None):
    """The tiny base, or (with `model_path`) a saved Hugging Face model in float32."""
    if model_path is None:
        return load_tiny(stream_texts(stream))
    from strcvit_bench.models.hf import load_hf

    return load_hf(str(model_path), dtype="float32")


def one_method(stream, store: RowStore, name: str, rows, batch_size: int, model_path: Path | None = None,
               warm_rows: int | None = None) -> dict:
    """Train `rows` once with the method `name` from its mid-stream state (set up on the first
    `warm_rows` rows of chunk 0); its chunk statistics."""
    bundle = fresh_bundle(stream, model_path)
    first = store.chunk(0)[:warm_rows]
    ctx = MethodContext(bundle=bundle, seed=0, num_chunks=stream.num_chunks,
                        chunk_size=int(stream.manifest["chunk_size"]), task_ids_visible=False,
                        lookup_rows=store.lookup)
    base_name, _, opts = name.partition(":")  # e.g. strlora:router_dim=16
    cls = get_method(base_name)
    options = [o for o in opts.split(";") if o]
    if base_name == "ewc" and warm_rows and not any(o.startswith("fisher_samples=") for o in options):
        # the Fisher is per-chunk work: on a slice of the chunk, its share of the chunk's samples
        share = cls.Options().fisher_samples * len(rows) / ctx.chunk_size
        options.append(f"fisher_samples={max(1, round(share))}")
    method = cls(parse_options(cls, options), ctx)
    params = method.setup()
    if base_name == "replay":  # a warm buffer, as mid-stream
        for r in first[: method.reservoir.capacity]:
            method.reservoir.add(r["id"], __import__("random").Random(0))
    if base_name == "ewc":  # a penalty in force, as from the second chunk on
        method.after_chunk(0, first)
    cfg = RunConfig(stream=str(stream.path), method=base_name, batch_size=batch_size)
    if base_name in ("branchlora", "cram"):  # mid-stream: clusters, routers, experts of a first chunk
        train_chunk(bundle, method, params, 0, first, cfg)
    stats = train_chunk(bundle, method, params, 1, rows, cfg)
    return {"samples_per_s": stats["train_samples_per_s"], "step_s": stats["train_seconds"] / stats["steps"],
            "trainable_params": stats["trainable_params"], "adapter_params": stats["adapter_params"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def method_throughput(stream, names: list[str], chunk: int, batch_size: int, rounds: int,
                      model_path: Path | None = None, limit: int | None = None) -> list[dict]:
    """Every method once per round, round-robin, so that a slow minute of a shared machine falls on
    all of them alike; medians over the rounds, and each round's ratio to that round's LoRA."""
    store = RowStore(stream, hide_task=True)
    store.remember(chunk)
    rows = store.chunk(chunk)[:limit]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            runs[name].append(one_method(stream, store, name, rows, batch_size, model_path, limit))
    lora = runs["lora"]
    out = []
    for name, rs in runs.items():
        ratios = [r["step_s"] / base["step_s"] for r, base in zip(rs, lora, strict=True)]
        out.append({"method": name, "rounds": rounds,
                    "samples_per_s": statistics.median(r["samples_per_s"] for r in rs),
                    "step_s": statistics.median(r["step_s"] for r in rs),
                    "step_vs_lora": statistics.median(ratios), "step_vs_lora_min": min(ratios),
                    "step_vs_lora_max": max(ratios),
                    "trainable_params": rs[0]["trainable_params"], "adapter_params": rs[0]["adapter_params"],
                    # the process's peak so far: meaningful in the first round only, methods in order
                    "peak_rss_mib": rs[0]["peak_rss_mib"]})
    return out


def ours_vs_peft(stream, batch_size: int, steps: int = 30) -> dict:
    import re

    from peft import LoraConfig, get_peft_model

    from strcvit_bench.adapters import LoRALinear, inject

    rows = RowStore(stream, hide_task=True).chunk(1)[:batch_size]
    models = {}
    b_ours = fresh_bundle(stream)
    inject(b_ours.model, b_ours.target_modules, lambda n, layer: LoRALinear(layer, r=8, alpha=16, dropout=0.0))
    for n, p in b_ours.model.named_parameters():
        p.requires_grad_("lora_" in n)
    models["ours"] = b_ours.model
    b_peft = fresh_bundle(stream)
    names = [n for n, m in b_peft.model.named_modules()
             if isinstance(m, torch.nn.Linear) and re.fullmatch(b_peft.target_modules, n)]
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=names)
    models["peft"] = get_peft_model(b_peft.model, config)
    batch = model_inputs(b_ours.encoder.train_batch(rows))
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.train()
    for step in range(steps + 3):
        for k, m in models.items():
            t = time.perf_counter()
            m(**batch).loss.backward()
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            if step >= 3:  # warm-up steps excluded
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"ours_step_ms": 1000 * med["ours"], "peft_step_ms": 1000 * med["peft"], "ratio": med["ours"] / med["peft"],
            "trainable_ours": sum(p.numel() for p in models["ours"].parameters() if p.requires_grad),
            "trainable_peft": sum(p.numel() for p in models["peft"].parameters() if p.requires_grad)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", type=Path, default=ROOT / "runs" / "demo" / "stream")
    ap.add_argument("--methods", help="comma-separated; options after ':' separated by ';' (strlora:router_dim=16); "
                    "default: every method, plus two StrLoRA ablations on the tiny model")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="round-robin repetitions (medians are reported)")
    ap.add_argument("--arch", choices=ARCHES, default="tiny")
    ap.add_argument("--layers", type=int, default=2, help="decoder layers of the wide architecture")
    ap.add_argument("--rows", type=int, help="train on the chunk's first ROWS rows (default: all; 48 when wide)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    stream = open_stream(args.stream)
    wide = args.arch != "tiny"
    limit = args.rows or (48 if wide else None)
    ablations = [] if wide else ["strlora:router_dim=16", "strlora:stability=false"]
    names = args.methods.split(",") if args.methods else [*(n for n in methods() if n != "joint"), *ablations]
    with tempfile.TemporaryDirectory() as tmp:
        model_path = save_wide_qwen2_vl(stream, Path(tmp) / "model", args.layers) if wide else None
        rows = method_throughput(stream, names, 2, args.batch_size, args.rounds, model_path, limit)
    size = stream.manifest["chunks"][2]["size"]
    n = min(size, limit) if limit else size
    arch = f"{args.arch}, {args.layers} layers" if wide else "tiny"
    print(f"training chunk 2 of {stream.name} ({n} rows, batch {args.batch_size}) on {arch}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} round-robin rounds")
    print(f"{'method':<26}{'samples/s':>11}{'step ms':>9}{'vs lora':>9}{'range':>12}{'trained':>11}{'adapter':>11}"
          f"{'peak RSS MiB':>14}")
    for r in rows:
        spread = f"{r['step_vs_lora_min']:.2f}-{r['step_vs_lora_max']:.2f}"
        print(f"{r['method']:<26}{r['samples_per_s']:>11.1f}{1000 * r['step_s']:>9.1f}{r['step_vs_lora']:>9.2f}"
              f"{spread:>12}{r['trainable_params']:>11,}{r['adapter_params']:>11,}{r['peak_rss_mib']:>14.0f}")
    if wide:
        if args.json:
            args.json.write_text(json.dumps({"arch": args.arch, "layers": args.layers, "rows": n,
                                             "methods": rows, **recorded_env()}, indent=2))
        return
    cmp = ours_vs_peft(stream, args.batch_size)
    print(f"\nLoRA layer, same model/batch/rank (median step): ours {cmp['ours_step_ms']:.1f} ms, "
          f"peft {cmp['peft_step_ms']:.1f} ms, ratio {cmp['ratio']:.3f} "
          f"(trainable {cmp['trainable_ours']:,} vs {cmp['trainable_peft']:,})")
    if args.json:
        args.json.write_text(json.dumps({"methods": rows, "lora_vs_peft": cmp, **recorded_env()}, indent=2))


if __name__ == "__main__":
    main()
