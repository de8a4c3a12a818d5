"""Run under torchrun: train the toy model with DDP and save the final weights (for the gloo test)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers.toy import ToyClassifier, toy_examples

from quads.compression.quantize import CodebookQuantizer
from quads.compression.spec import QuantizationSpec
from quads.config import OptimConfig
from quads.training.loop import Stage, fit
from quads.training.losses import LossWeights, ce_weights
from quads.training.shards import ShardedExamples


def main(out_dir: str, mode: str = "ce", stores: str = "") -> None:
    """mode "ce": two CE epochs; "quantize": one CE epoch, then a 2-bit quantize stage with the centroid term.
    With `stores`, the examples are read from the sharded stores in that folder (written by the test)."""
    train_set, valid_set = toy_examples(96, 0), toy_examples(30, 1)
    if stores:
        train_set, valid_set = ShardedExamples(Path(stores) / "train"), ShardedExamples(Path(stores) / "valid")
    torch.manual_seed(0)
    model = ToyClassifier()
    # float32 steps: a bf16 forward (`auto` on a CPU with AMX) rounds half a batch differently from a whole one
    optim = OptimConfig(epochs=2, batch_size=16, lr=1e-2, warmup_epochs=0.5, spec_augment=False, precision="fp32")
    stages = [Stage("ce", 2, ce_weights())]
    if mode == "quantize":
        stages = [Stage("ce", 1, ce_weights()),
                  Stage("quantize", 2, LossWeights(ce=1.0, centroid=1.0), quantize=True)]
    result = fit(model, train_set, valid_set, stages, optim, out_dir, seed=0, progress=False,
                 quantizer_factory=lambda m: CodebookQuantizer(m, QuantizationSpec(bits=2), fit=False))
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(result.model_state, Path(out_dir) / "final.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
