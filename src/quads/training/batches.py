"""Example sets and a deterministic batch order that is the same on 1 or N processes.

`ExampleSet` keeps its tensors in memory (tests, small tools); `quads.training.shards.ShardedExamples` has the same
interface and reads each batch from disk (what training on a corpus uses). The order of an epoch depends
only on (seed, epoch), which is what makes `--resume` continue bit-for-bit and lets N processes split each
global batch between them (rank r takes every N-th example of it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


@dataclass
class Batch:
    inputs: Tensor  # [B, C, T] (time last) or [B, T, D] (time first), zero-padded
    mask: Tensor  # [B, T] bool, True = real frame
    labels: Tensor  # [B] long
    index: Tensor  # [B] positions in the ExampleSet (to look up cached teacher targets)


class ExampleSet:
    """Variable-length tensors with their labels; `time_dim` says which axis of each item is time."""

    def __init__(self, items: Sequence[Tensor], labels: Sequence[int] | Tensor, time_dim: int, ids: Sequence[str] = ()):
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} items but {len(labels)} labels")
        if time_dim not in (0, 1):
            raise ValueError("time_dim must be 0 (items [T, D]) or 1 (items [C, T])")
        self.items = list(items)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.time_dim = time_dim
        self.ids = list(ids) or [str(i) for i in range(len(self.items))]
        self.lengths = torch.tensor([item.shape[time_dim] for item in self.items], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.items)

    def collate(self, positions: Sequence[int] | Tensor) -> Batch:
        positions = torch.as_tensor(positions, dtype=torch.long)
        chosen = [self.items[i] for i in positions.tolist()]
        max_len = int(max(self.lengths[positions].max().item(), 1))
        first = chosen[0]
        if self.time_dim == 1:
            inputs = first.new_zeros((len(chosen), first.shape[0], max_len))
            for row, item in enumerate(chosen):
                inputs[row, :, : item.shape[1]] = item
        else:
            inputs = first.new_zeros((len(chosen), max_len, first.shape[1]))
            for row, item in enumerate(chosen):
                inputs[row, : item.shape[0]] = item
        mask = torch.arange(max_len)[None, :] < self.lengths[positions][:, None]
        return Batch(inputs.float(), mask, self.labels[positions], positions)

    def in_length_order(self, batch_size: int) -> Iterator[Batch]:
        """Batches of similar lengths (less padding) for evaluation; order does not matter there."""
        order = torch.argsort(self.lengths, stable=True)
        for start in range(0, len(order), batch_size):
            yield self.collate(order[start : start + batch_size])


ORDER_SEED_STRIDE = 1_000_003  # a prime above any epoch count: (seed, epoch) -> seed * stride + epoch is one-to-one
BUCKET_SEED_OFFSET = 500_009  # the bucket shuffle's generator: away from the epoch order's of the same epoch


def order_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle (the bucket shuffle adds BUCKET_SEED_OFFSET)."""
    return seed * ORDER_SEED_STRIDE + epoch


def epoch_order(num_examples: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order of one epoch, a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(order_seed(seed, epoch))
    return torch.randperm(num_examples, generator=generator)


BUCKET_BATCHES = 16  # batches whose examples are sorted by length together


def bucket_by_length(order: Tensor, lengths: Tensor, batch_size: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order regrouped so each batch holds examples of similar length (less padding to compute):
    each run of BUCKET_BATCHES batches' worth of examples is sorted by length and cut into batches, then the
    full batches are shuffled (the partial one stays last). Still a pure function of (seed, epoch)."""
    size = BUCKET_BATCHES * batch_size
    chunks = [order[start : start + size] for start in range(0, len(order), size)]
    ordered = torch.cat([chunk[torch.argsort(lengths[chunk], stable=True)] for chunk in chunks])
    batches = list(ordered.split(batch_size))
    partial = [batches.pop()] if len(batches[-1]) < batch_size else []
    generator = torch.Generator().manual_seed(order_seed(seed, epoch) + BUCKET_SEED_OFFSET)
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return torch.cat(shuffled + partial)


def global_batches(num_examples: int, batch_size: int, seed: int, epoch: int, world_size: int = 1,
                   lengths: Tensor | None = None) -> list[Tensor]:
    """Global batches of one epoch (grouped by similar `lengths` when given). The last partial batch is dropped
    when any rank would get no example."""
    order = epoch_order(num_examples, seed, epoch)
    if lengths is not None and num_examples > 0:
        order = bucket_by_length(order, lengths, batch_size, seed, epoch)
    batches = [order[i : i + batch_size] for i in range(0, num_examples, batch_size)]
    if batches and len(batches[-1]) < max(world_size, 2):
        batches.pop()
    return batches


def rank_share(global_batch: Tensor, rank: int, world_size: int) -> Tensor:
    """The examples of a global batch that process `rank` computes."""
    return global_batch[rank::world_size]


class RankBatches(Dataset):
    """Item i is this rank's share of global batch i, collated: what a DataLoader reads, in worker processes
    when there are any. The batches are fixed before the epoch, so workers change speed, never order."""

    def __init__(self, examples, batches: Sequence[Tensor], rank: int = 0, world_size: int = 1):
        self.examples, self.batches, self.rank, self.world_size = examples, list(batches), rank, world_size

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Batch:
        return self.examples.collate(rank_share(self.batches[index], self.rank, self.world_size))


def _as_is(batch: Batch) -> Batch:
    return batch


def batch_loader(examples, batches: Sequence[Tensor], rank: int = 0, world_size: int = 1,
                 workers: int = 0) -> DataLoader:
    """A DataLoader over this rank's share of `batches`, in their order; `workers` > 0 reads ahead in parallel."""
    return DataLoader(RankBatches(examples, batches, rank, world_size), batch_size=None, shuffle=False,
                      num_workers=workers, collate_fn=_as_is, prefetch_factor=4 if workers else None)
