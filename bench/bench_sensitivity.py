"""Per-tensor quantization sensitivity: which weights a low-bit codebook hurts most.

Each tensor that a recipe quantizes is snapped alone to a b-bit k-means codebook (every other tensor stays
float) and the model is scored on a split; the accuracy drop is that tensor's sensitivity. This is the
measure behind the default `quant.min_bits` floors: a tensor whose drop is large for its share of the
weights is worth a wider codebook.

    python bench/bench_sensitivity.py MODEL.quads [--data CORPUS] [--split valid] [--bits 2] [--limit 200]

MODEL is an fp32 packed file (e.g. the demo's `models/distill-32b-s0.quads`); CORPUS defaults to the built-in
corpus. Pick widths on the valid split, not test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from quads import load
from quads.commands.costs import spread_sample
from quads.commands.evaluate import load_evaluation_split, predict_features
from quads.compression.codebook import fit_codebook
from quads.compression.spec import QuantizationSpec, select_quantized_tensors
from quads.data import LabelMap
from quads.features import compute_features
from quads.training.experiment import default_corpus_dir


def accuracy(classifier: torch.nn.Module, features: list[torch.Tensor], truth: list[int]) -> float:
    predicted = predict_features(classifier, features)
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an fp32 packed model file")
    parser.add_argument("--data", default=None, help="corpus folder or manifest (default: the built-in corpus)")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--bits", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="score at most N utterances, spread over the split")
    args = parser.parse_args(argv)

    model = load(args.model)
    data = Path(args.data) if args.data else default_corpus_dir()
    utterances, _ = load_evaluation_split(data, args.split, model.labels)
    if args.limit:
        utterances = [utterances[i] for i in spread_sample(len(utterances), args.limit)]
    label_map = LabelMap(model.labels)
    truth = [label_map.encode(utterance.label) for utterance in utterances]
    features = compute_features(utterances, model.frontend_config, None, progress=False)

    classifier = model.classifier
    baseline = accuracy(classifier, features, truth)
    parameters = dict(classifier.named_parameters())
    selected = select_quantized_tensors(classifier, QuantizationSpec(bits=args.bits))
    total = sum(parameters[name].numel() for name in selected)
    print(f"{args.model}: float accuracy {100 * baseline:.1f} % on {len(truth)} {args.split} utterances; "
          f"each tensor alone at {args.bits} bits\n")
    print("| tensor | weights | share (%) | accuracy (%) | drop (points) |")
    print("|---|---|---|---|---|")
    rows = []
    for name in selected:
        weight = parameters[name]
        original = weight.detach().clone()
        with torch.no_grad():
            weight.copy_(fit_codebook(weight, args.bits).dequantize())
            score = accuracy(classifier, features, truth)
            weight.copy_(original)
        rows.append((baseline - score, name, weight.numel(), score))
    for drop, name, numel, score in sorted(rows, reverse=True):
        print(f"| {name} | {numel:,} | {100 * numel / total:.1f} | {100 * score:.1f} | {100 * drop:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
