"""The process group of a `torchrun` launch, or a single process: the few lines distributed training needs.

Under `torchrun` each process takes its share of every global batch and DDP averages gradients; the loop
scales the loss so that N processes compute exactly the gradient of one process on the global batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


class Distributed:
    """The process group of a `torchrun` launch, or a single process."""

    def __init__(self, enabled: bool = True) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1")) if enabled else 1
        self.rank = int(os.environ.get("RANK", "0")) if enabled else 0
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_sum(self, values: Tensor) -> Tensor:
        if self.world_size > 1:
            values = values.clone()
            dist.all_reduce(values)
        return values
