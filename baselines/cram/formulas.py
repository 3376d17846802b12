"""CRAM's formulas as pure tensor functions: centroid routing, the orthogonality penalty and the
adaptive-rank growth of an expert (each unit-tested by hand)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rbf_weights(image: torch.Tensor, centroids: torch.Tensor, sigma: float) -> torch.Tensor:
    """softmax over centroids of −‖v̂ − ĉ‖² / 2σ², on unit-normalised vectors; (B, d) × (K, d) → (B, K)."""
    v, c = F.normalize(image.float(), dim=-1), F.normalize(centroids.float(), dim=-1)
    d2 = (v.unsqueeze(1) - c.unsqueeze(0)).pow(2).sum(-1)
    return torch.softmax(-d2 / (2 * sigma ** 2), dim=-1)


def output_basis(columns: torch.Tensor, rel_eps: float = 1e-6) -> torch.Tensor | None:
    """Orthonormal basis (d, q) of the span of `columns` (d, k); None for an empty span."""
    if columns.numel() == 0:
        return None
    U, S, _ = torch.linalg.svd(columns.float(), full_matrices=False)
    keep = S.gt(rel_eps * S.max().clamp_min(1e-30))
    return U[:, keep] if bool(keep.any()) else None


def orthogonality_penalty(z: torch.Tensor, basis: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """mean_b γ_b ‖Qᵀ z_b‖²: zero when the new update's outputs avoid the old experts' directions."""
    return (gamma * (z.float() @ basis).pow(2).sum(-1)).mean()


def grow_expert(A_e: torch.Tensor, B_e: torch.Tensor, A_new: torch.Tensor, B_new: torch.Tensor,
                basis: torch.Tensor | None, tau: float, rank_max: int
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """An expert's update (B_e A_e, rank R_e) after adding a block's update ΔW = B_new A_new.

    The gap (I − QQᵀ) ΔW is what the existing experts (output basis Q) do not express; the expert
    grows by its number of singular values above τ · σ_1(ΔW). Its new factors are the top
    min(R_e + growth, rank_max) singular directions of B_e A_e + ΔW, as A = √S Vᵀ, B = U √S.
    Works on the factors (QR of the d_out side), never forming a d_out × d_in matrix.
    """
    A_new, B_new = A_new.detach().float(), B_new.detach().float()
    A_e, B_e = A_e.detach().float(), B_e.detach().float()
    full = torch.linalg.svdvals(torch.linalg.qr(B_new).R @ A_new)
    top = float(full[0]) if full.numel() else 0.0
    gap_B = B_new if basis is None else B_new - basis @ (basis.t() @ B_new)
    gap = torch.linalg.svdvals(torch.linalg.qr(gap_B).R @ A_new)
    growth = int(gap.gt(tau * top).sum()) if top > 0 else 0
    rank = min(A_e.shape[0] + growth, rank_max)
    info = {"grew": float(max(0, rank - A_e.shape[0])),
            "gap_fraction": float(gap.norm() / full.norm()) if top > 0 else 0.0}
    Q, R = torch.linalg.qr(torch.cat([B_e, B_new], dim=1))
    U, S, Vh = torch.linalg.svd(R @ torch.cat([A_e, A_new]), full_matrices=False)
    root = S[:rank].sqrt()
    return root[:, None] * Vh[:rank], (Q @ U[:, :rank]) * root[None, :], info
