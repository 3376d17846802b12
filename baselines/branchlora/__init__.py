"""BranchLoRA (Zhang et al., ACL 2025), adapted to streams: `keys` holds the task keys, the
selector and the freezing rule, `layer` the adapter layer, `method` the plugin (and why)."""

from strcvit_bench.baselines.branchlora.keys import TaskKeys, alignment_loss, refreeze
from strcvit_bench.baselines.branchlora.layer import BranchLoRALinear
from strcvit_bench.baselines.branchlora.method import BranchLoRA, BranchLoRAOptions

__all__ = ["BranchLoRA", "BranchLoRALinear", "BranchLoRAOptions", "TaskKeys", "alignment_loss", "refreeze"]
