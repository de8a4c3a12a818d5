"""Run under torchrun: train the toy model with DDP and save the final weights (for the gloo test)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers.toy import ToyClassifier, toy_examples

from quads.config import OptimConfig
from quads.distill import ce_weights
from quads.train import Stage, fit


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    model = ToyClassifier()
    optim = OptimConfig(epochs=2, batch_size=16, lr=1e-2, warmup_epochs=0.5, spec_augment=False)
    result = fit(model, toy_examples(96, 0), toy_examples(30, 1), [Stage("ce", 2, ce_weights())], optim,
                 out_dir, seed=0, progress=False)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(result.model_state, Path(out_dir) / "final.pt")


if __name__ == "__main__":
    main(sys.argv[1])
