"""The embedded default: a tiny Llava-style model built from a transformers config.

CLIP-style vision tower (48 px, patch 8 → 36 image tokens, 3 layers × 128) and a Llama-style
decoder (2 layers × 256), about 2.2 M parameters, so every method trains at well over 100
samples/s on a 2-core CPU. Its word-level tokenizer is trained offline on the builtin
generators' vocabulary plus the stream's own text.

Two decoder layers, not four: on the demo stream a 4-layer decoder pre-trained to the same
caption loss (0.80) and learned the tasks no better (joint training ended at the same
accuracies on every task; OCR stays the limit either way), while each layer is about a fifth
of a run's time — two layers cut the demo's pre-training and runs to 0.6 of their time
(benchmarks/RESULTS.md).

LoRA methods adapt a *pre-trained* base. A randomly initialised base would have to learn to
see and to answer at once, and forgetting would be drowned in that. So the base is first
pre-trained (all weights) on the `captions` generator — descriptions of the same visual
world, never the stream's questions, with seeds disjoint from any stream — and cached under a
content-addressed path, so the demo pays for it once.

The demo's own base ships with the package (`models/bases/`, made by `strcvit demo-base
--write`): its pre-training is a fifth of a cold demo on a 2-core machine, and a base
pre-trained here is the same bits only on the same class of CPU, so a shipped one gives every
machine the committed leaderboard's starting weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from strcvit_bench.models.base import ModelBundle, to_pil
from strcvit_bench.seeding import derive_seed

SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]", "<image>"]
PAD, UNK, BOS, EOS, SEP, IMAGE = range(6)
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class TinyConfig:
    image_size: int = 48
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 3
    text_hidden: int = 256
    text_layers: int = 2
    heads: int = 4
    max_instruction_tokens: int = 40
    max_answer_tokens: int = 12


@dataclass(frozen=True)
class PretrainRecipe:
    samples: int = 24_000
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 1234  # disjoint from streams: captions rows are drawn under derive_seed(seed, "pretrain")


PRETRAIN_THREADS = 2  # the reference machine's cores; fixed, so the base is the same bits everywhere


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@functools.lru_cache(maxsize=2)
def generator_corpus(n_per_generator: int = 3000) -> tuple[str, ...]:
    """Questions, answers and captions the builtin generators can produce (no rendering needed)."""
    import random

    from strcvit_bench.data.sources.builtin import FAMILY_MODULES

    out: set[str] = set()
    for name, module in FAMILY_MODULES.items():
        rng = random.Random(derive_seed(0, "vocab", name))
        for _ in range(n_per_generator):
            scene = module.sample(rng)
            q, a = module.ask(scene, rng, module.QUESTION_KINDS)
            out.update((q, a, module.describe(scene)))
    out.add(" ".join(str(i) for i in range(1000)))
    return tuple(sorted(out))


def build_tokenizer(texts: Iterable[str]):
    """A WordLevel tokenizer over every word in `texts` (sorted, so the ids are reproducible)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = sorted({w for t in texts for w in words(t)})
    table = {tok: i for i, tok in enumerate(SPECIAL)}
    for w in vocab:
        table.setdefault(w, len(table))
    tok = Tokenizer(models.WordLevel(vocab=table, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]",
        sep_token="[SEP]", additional_special_tokens=["<image>"], padding_side="left",
    )


def build_model(cfg: TinyConfig, vocab_size: int, seed: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=cfg.vision_hidden, intermediate_size=2 * cfg.vision_hidden,
                              num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.heads,
                              image_size=cfg.image_size, patch_size=cfg.patch_size, projection_dim=cfg.vision_hidden)
    text = LlamaConfig(hidden_size=cfg.text_hidden, intermediate_size=2 * cfg.text_hidden,
                       num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.heads,
                       num_key_value_heads=cfg.heads, vocab_size=vocab_size, max_position_embeddings=128,
                       tie_word_embeddings=True, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE, projector_hidden_act="gelu",
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         image_seq_length=(cfg.image_size // cfg.patch_size) ** 2)
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config)


class TinyEncoder:
    """Rows to tensors for the tiny model: [BOS] <image>×N instruction [SEP] answer [EOS]."""

    def __init__(self, tokenizer, cfg: TinyConfig):
        self.tokenizer = tokenizer
        self.backend = tokenizer.backend_tokenizer
        self.cfg = cfg
        self.n_image = (cfg.image_size // cfg.patch_size) ** 2
        self.pad_token_id = PAD
        self.eos_token_id = EOS

    def _ids(self, texts: list[str], limit: int) -> list[list[int]]:
        return [e.ids[:limit] for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def pixels(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        size = self.cfg.image_size
        arrays = []
        for r in rows:
            im = to_pil(r["image"])
            if im.size != (size, size):
                im = im.resize((size, size))
            arrays.append(np.asarray(im, dtype=np.float32))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return (x / 127.5) - 1.0

    def _instruction(self, rows: list[dict[str, Any]]) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        ids = self._ids([r["instruction"] for r in rows], self.cfg.max_instruction_tokens)
        width = max(1, max(len(i) for i in ids))
        inst = torch.full((len(rows), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, seq in enumerate(ids):
            inst[k, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[k, : len(seq)] = 1
        return ids, {"instruction_ids": inst, "instruction_mask": mask}

    def train_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inst_ids, inst = self._instruction(rows)
        ans_ids = self._ids([r["answer"] for r in rows], self.cfg.max_answer_tokens)
        seqs, labels = [], []
        for q, a in zip(inst_ids, ans_ids, strict=True):
            prompt = [BOS] + [IMAGE] * self.n_image + q + [SEP]
            seqs.append(prompt + a + [EOS])
            labels.append([-100] * len(prompt) + a + [EOS])
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        label_t = torch.full((len(rows), width), -100, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for k, (s, lab) in enumerate(zip(seqs, labels, strict=True)):
            input_ids[k, : len(s)] = torch.tensor(s)
            label_t[k, : len(s)] = torch.tensor(lab)
            attn[k, : len(s)] = 1
        return {"input_ids": input_ids, "attention_mask": attn, "pixel_values": self.pixels(rows),
                "labels": label_t, **inst}

    def prompt_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inst_ids, inst = self._instruction(rows)
        seqs = [[BOS] + [IMAGE] * self.n_image + q + [SEP] for q in inst_ids]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for k, s in enumerate(seqs):  # left padding: generation continues at the right edge
            input_ids[k, width - len(s):] = torch.tensor(s)
            attn[k, width - len(s):] = 1
        return {"input_ids": input_ids, "attention_mask": attn, "pixel_values": self.pixels(rows), **inst}

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        out = []
        for seq in token_ids.tolist():
            if EOS in seq:
                seq = seq[: seq.index(EOS)]
            toks = [self.tokenizer.convert_ids_to_tokens(i) for i in seq if i > IMAGE]
            text = " ".join(toks)
            text = re.sub(r"(\d) ([.,]) (\d)", r"\1\2\3", text)
            out.append(re.sub(r" ([.,!?%])", r"\1", text))
        return out


def cache_root() -> Path:
    return Path(os.environ.get("STRCVIT_CACHE", Path.home() / ".cache" / "strcvit"))


SHIPPED = Path(__file__).resolve().parent / "bases"


def _identity(cfg: TinyConfig, recipe: PretrainRecipe, vocab: list[str]) -> dict[str, Any]:
    return {"config": asdict(cfg), "recipe": asdict(recipe),
            "vocab": hashlib.sha256("\n".join(vocab).encode()).hexdigest(),
            "format": 2}  # 2: pre-trained with PRETRAIN_THREADS threads on every machine


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _cache_key(cfg: TinyConfig, recipe: PretrainRecipe, vocab: list[str]) -> str:
    """A base pre-trained here: other library versions may pre-train it to other bits."""
    import transformers

    return _key({**_identity(cfg, recipe, vocab), "torch": ".".join(torch.__version__.split(".")[:2]),
                 "transformers": ".".join(transformers.__version__.split(".")[:2])})


def shipped_key(cfg: TinyConfig, recipe: PretrainRecipe, vocab: list[str]) -> str:
    """A shipped base: its weights are fixed bits, whatever versions load them."""
    return _key(_identity(cfg, recipe, vocab))


def weights_sha256(path: Path) -> str:
    """What a run records of its base, so a resume onto other base weights is refused."""
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def pretrain(model, encoder: TinyEncoder, recipe: PretrainRecipe,
             progress: Callable[[str, int, int], None] | None = None) -> dict[str, float]:
    """Full-weight training on generated captions (the only place the tiny base is trained), in
    PRETRAIN_THREADS threads whatever the machine: the base's bits must not depend on its core
    count, or no run made on it would reproduce elsewhere."""
    from strcvit_bench.env import torch_threads

    with torch_threads(PRETRAIN_THREADS):
        return _pretrain(model, encoder, recipe, progress)


def _pretrain(model, encoder: TinyEncoder, recipe: PretrainRecipe,
              progress: Callable[[str, int, int], None] | None) -> dict[str, float]:
    from strcvit_bench.data.sources.builtin.source import BuiltinSource, BuiltinSourceConfig

    src = BuiltinSource(BuiltinSourceConfig(kind="builtin", generator="captions", image_size=encoder.cfg.image_size),
                        derive_seed(recipe.seed, "pretrain"))
    steps = max(1, recipe.samples // recipe.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    torch.manual_seed(recipe.seed)
    model.train()
    started, losses = time.perf_counter(), []
    for step in range(steps):
        rows = []
        for i in range(step * recipe.batch_size, (step + 1) * recipe.batch_size):
            r = src.make_row("train", i)
            rows.append({"image": r.image, "instruction": r.question, "answer": r.target})
        batch = encoder.train_batch(rows)
        batch.pop("instruction_ids"), batch.pop("instruction_mask")
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress:
            progress(f"pre-training the tiny base (loss {loss.item():.2f})", step + 1, steps)
    model.eval()
    tail = losses[-max(1, steps // 10):]
    return {"final_loss": sum(tail) / len(tail), "seconds": time.perf_counter() - started, "steps": steps}


def load_tiny(stream_texts: Iterable[str], *, cfg: TinyConfig | None = None, recipe: PretrainRecipe | None = None,
              progress: Callable[[str, int, int], None] | None = None, shipped: bool = True,
              cache: Path | None = None) -> ModelBundle:
    """The pre-trained tiny base for a stream's vocabulary: the shipped one where the package has
    it (`shipped=False` ignores it), else the cached one (under `cache`, default cache_root()),
    else pre-trained now and cached."""
    from transformers import AutoModelForImageTextToText, PreTrainedTokenizerFast

    cfg = cfg or TinyConfig()
    recipe = recipe or PretrainRecipe()
    tokenizer = build_tokenizer([*generator_corpus(), *stream_texts])
    vocab = [tokenizer.convert_ids_to_tokens(i) for i in range(len(tokenizer))]
    base_key = shipped_key(cfg, recipe, vocab)
    path, base = SHIPPED / f"tiny-{base_key}", "shipped"
    if not (shipped and (path / "config.json").is_file()):
        path, base = (cache or cache_root()) / "models" / f"tiny-{_cache_key(cfg, recipe, vocab)}", "cache"
    info: dict[str, Any] = {"cache": str(path), "config": asdict(cfg), "pretrain": asdict(recipe)}
    if (path / "config.json").is_file():
        model = AutoModelForImageTextToText.from_pretrained(path)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
        info["pretrain_stats"] = json.loads((path / "pretrain.json").read_text())
        info["cached"] = True
    else:
        base = "pre-trained"
        model = build_model(cfg, len(tokenizer), derive_seed(recipe.seed, "init"))
        encoder = TinyEncoder(tokenizer, cfg)
        stats = pretrain(model, encoder, recipe, progress)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "pretrain.json").write_text(json.dumps(stats))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, path)
        except OSError:  # another process cached it first: use theirs
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        info["pretrain_stats"] = stats
        info["cached"] = False
    info.update(base=base, base_key=base_key)
    info["weights_sha256"] = weights_sha256(path)
    model.eval()
    return ModelBundle(model=model, encoder=TinyEncoder(tokenizer, cfg), name="tiny", family="llava",
                       max_new_tokens=cfg.max_answer_tokens + 1, info=info)
