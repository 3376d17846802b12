"""From a RunConfig to a model with its method attached — shared by the runner and by anything
that reloads a run's checkpoint (the lm-eval model), so both build exactly the same thing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from strcvit_bench.errors import StrcvitError
from strcvit_bench.methods import Method, MethodContext
from strcvit_bench.methods.registry import get_method, parse_options
from strcvit_bench.models import ModelBundle, load_model
from strcvit_bench.parallel import Parallel
from strcvit_bench.seeding import derive_seed
from strcvit_bench.streams.stream import Stream
from strcvit_bench.training import checkpoint
from strcvit_bench.training.config import RunConfig


def stream_texts(stream: Stream) -> list[str]:
    """Instructions and answers of the whole stream (the tiny model's tokenizer covers them)."""
    texts: list[str] = []
    tables = [stream.read_test(t, columns=["instruction", "answers"]) for t in stream.task_names]
    tables += [stream.read_chunk(c["index"], columns=["instruction", "answers"]) for c in stream.manifest["chunks"]]
    for table in tables:
        texts.extend(table.column("instruction").to_pylist())
        texts.extend(a for answers in table.column("answers").to_pylist() for a in answers)
    return texts


def device_for(name: str) -> torch.device:
    """auto, cpu, cuda or cuda:N; a device that is not there is a usage error, not a traceback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise StrcvitError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StrcvitError(f"--device {name}: no CUDA device is available here (torch {torch.__version__}); "
                           f"use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise StrcvitError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def build(cfg: RunConfig, stream: Stream, lookup_rows: Callable[[list[str]], list[dict[str, Any]]] = lambda ids: [],
          progress: Callable[[str, int, int], None] | None = None, parallel: Parallel | None = None,
          chunk_ids: Callable[[], list[list[str]]] = list,
          ) -> tuple[ModelBundle, Method, dict[str, torch.nn.Parameter]]:
    """The configured model on its device, the method attached, and its trainable parameters."""
    parallel = parallel or Parallel(distributed=False)
    tiny: dict[str, Any] = {"shipped": cfg.shipped_base} if cfg.model == "tiny" else {}
    if cfg.model == "tiny" and cfg.pretrain_samples is not None:
        from strcvit_bench.models.tiny import PretrainRecipe

        tiny["recipe"] = PretrainRecipe(samples=cfg.pretrain_samples)
    with parallel.main_first():  # rank 0 pre-trains and caches the tiny base; the others read it
        bundle = load_model(cfg.model, stream_texts=stream_texts(stream) if cfg.model == "tiny" else (),
                            dtype=cfg.dtype, progress=progress, **tiny)
    bundle.target_modules = cfg.target_modules
    bundle.projector_modules = cfg.projector_modules if cfg.train_projector else r"(?!)"
    bundle.model.to(parallel.device if parallel.enabled else device_for(cfg.device))
    if cfg.gradient_checkpointing:
        model = bundle.model  # transformers 5 renamed it; older releases only have the first name
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cls = get_method(cfg.method)
    ctx = MethodContext(
        bundle=bundle, seed=cfg.seed, num_chunks=stream.num_chunks, chunk_size=int(stream.manifest["chunk_size"]),
        task_ids_visible=bool(stream.manifest.get("task_ids_visible", False)), lookup_rows=lookup_rows,
        parallel=parallel, chunk_ids=chunk_ids,
    )
    method = cls(parse_options(cls, cfg.method_options), ctx)
    # adapters draw their initial weights from a seed of their own: the global generator's state
    # here depends on whether the tiny base was just pre-trained or read from the cache
    torch.manual_seed(derive_seed(cfg.seed, "adapters"))
    params = method.setup()
    if cfg.compile:
        bundle.model.compile()  # in place: generate() and the methods' hooks keep working
    return bundle, method, params


def restore(run_dir: Path, index: int, method: Method, params: dict[str, torch.nn.Parameter]) -> dict[str, Any]:
    """Load chunk `index`'s checkpoint into the parameters and the method; returns the run state."""
    trainable, m_tensors, m_meta, state = checkpoint.load(run_dir, index)
    method.load_state(m_tensors, m_meta)  # first: it may re-create parameters added along the stream
    missing = sorted(set(trainable) - set(params))
    if missing:
        raise StrcvitError(f"checkpoint {checkpoint.chunk_dir(run_dir, index)} holds parameters this method did not "
                           f"re-create ({', '.join(missing[:3])} …); was it written by another version?")
    with torch.no_grad():
        for name, value in trainable.items():
            params[name].copy_(value)
    return state
