"""A toy classification task and model for training-loop tests: fast, deterministic, learnable."""

import torch
from torch import nn

from quads.models.classifier import ClassifierOutput
from quads.training.batches import ExampleSet


def toy_examples(count: int, seed: int, channels: int = 8, classes: int = 3) -> ExampleSet:
    """Features [C, T] of random lengths; the class is which channel group carries a raised mean."""
    generator = torch.Generator().manual_seed(seed)
    items, labels = [], []
    for i in range(count):
        label = i % classes
        length = int(torch.randint(10, 30, (1,), generator=generator))
        item = torch.randn(channels, length, generator=generator)
        item[label * 2 : label * 2 + 2] += 1.5
        items.append(item)
        labels.append(label)
    return ExampleSet(items, labels, time_dim=1)


def toy_store(directory, count: int, seed: int, shard_bytes: int = 4000):
    """The same examples as `toy_examples`, written into a sharded store on disk (several small shards)."""
    from quads.training.shards import open_or_build

    examples = toy_examples(count, seed)
    return open_or_build(directory, count, lambda positions: [examples.items[i] for i in positions],
                         examples.labels, examples.ids, time_dim=1, shard_bytes=shard_bytes)


class ToyClassifier(nn.Module):
    """A conv layer, masked mean pooling and a linear head; outputs like IntentClassifier (frames included)."""

    def __init__(self, channels: int = 8, width: int = 16, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(channels, width, 3, padding=1)
        self.head = nn.Linear(width, classes)

    def forward(self, inputs, mask):
        frames = torch.relu(self.conv(inputs)).transpose(1, 2)
        weights = mask.unsqueeze(-1).float()
        embedding = (frames * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return ClassifierOutput(self.head(embedding), embedding, frames, mask)
