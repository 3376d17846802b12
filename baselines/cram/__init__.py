"""CRAM (Tang et al.), adapted to streams: `formulas` holds the pure parts, `layer` the adapter
layer, `method` the plugin (and what a stream changes)."""

from strcvit_bench.baselines.cram.formulas import grow_expert, orthogonality_penalty, output_basis, rbf_weights
from strcvit_bench.baselines.cram.layer import CRAMLinear
from strcvit_bench.baselines.cram.method import CRAM, CRAMOptions

__all__ = ["CRAM", "CRAMLinear", "CRAMOptions", "grow_expert", "orthogonality_penalty", "output_basis", "rbf_weights"]
