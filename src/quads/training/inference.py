"""A classifier's outputs on an in-memory example set, in eval mode: what validation, pre-tuning, scoring and
the grid's evaluations share (none of them needs the training loop)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from quads.models.head import ClassifierOutput
from quads.training.batches import ExampleSet


def classifier_outputs(output: ClassifierOutput) -> tuple[Tensor, Tensor]:
    """(logits, embedding) from a classifier's output."""
    return output.logits, output.embedding


@torch.no_grad()
def predict_embeddings(classifier: nn.Module, examples: ExampleSet, batch_size: int = 64,
                       progress: bool = False) -> tuple[Tensor, Tensor]:
    """(pooled embeddings, logits) for every example, in the set's own order, in eval mode."""
    was_training = classifier.training
    classifier.eval()
    embeddings: Tensor | None = None
    logits_all: Tensor | None = None
    batches = tqdm(examples.in_length_order(batch_size), total=math.ceil(len(examples) / batch_size),
                   desc="evaluate", unit="batch", disable=not progress, leave=False)
    for batch in batches:
        logits, embedding = classifier_outputs(classifier(batch.inputs, batch.mask))
        if embeddings is None:
            embeddings = torch.empty(len(examples), embedding.shape[1])
            logits_all = torch.empty(len(examples), logits.shape[1])
        embeddings[batch.index] = embedding
        logits_all[batch.index] = logits
    classifier.train(was_training)
    assert embeddings is not None and logits_all is not None
    return embeddings, logits_all


def predict_logits(classifier: nn.Module, examples: ExampleSet, batch_size: int = 64,
                   progress: bool = False) -> Tensor:
    """Logits for every example, in the set's own order."""
    return predict_embeddings(classifier, examples, batch_size, progress)[1]


def evaluate_accuracy(classifier: nn.Module, examples: ExampleSet, batch_size: int = 64) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a classifier on an example set, in eval mode."""
    logits = predict_logits(classifier, examples, batch_size)
    accuracy = float((logits.argmax(-1) == examples.labels).float().mean())
    return accuracy, float(nn.functional.cross_entropy(logits, examples.labels))
