"""`quads eval`: what a packed model file scores on a corpus, and what it costs to run.

Scores
- accuracy over the evaluated utterances;
- macro-F1 (scikit-learn) over the intents that occur in the data *or* in the predictions: every one of them
  is in the model's label map. An intent of the map that is neither spoken nor predicted has no defined F1, so
  averaging it in as 0 (or 1) would only say how large the label map is; a predicted intent that never occurs
  in the data counts with F1 = 0, so spurious predictions are punished. The same intents are the rows and
  columns of the confusion matrix and of the per-intent report.

Costs (docs/METHOD.md, "Efficiency figures"; measured by `quads.commands.costs`)
- parameters of the classifier (encoder + head), bytes of the file on disk, and its theoretical size (the
  payload: bit-packed indices + codebooks + float16 tensors + float remainder; the difference is the header);
- GMACs for one utterance at its real length, counted exactly once per distinct frame count and averaged over
  the evaluated utterances (conv layers grow linearly with length, attention quadratically, so a single
  "typical length" figure would be wrong for transformers), and at Whisper's 30 s padding (3000 frames),
  which is how the paper counted;
- CPU latency of one utterance (batch size 1, waveform in memory -> log-mel front-end -> classifier; reading
  the audio file is not included), median and 90th percentile after a warm-up, with torch's thread setting
  as it is (recorded in the result).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quads.atomic import atomic_write_bytes, atomic_write_text
from quads.audio import LONG_CLIP_SECONDS, AudioWarning, load_audio
from quads.commands.costs import (
    WHISPER_SECONDS,
    gmacs_for_architecture,
    mean_gmacs,
    measure_latency,
    single_threaded,
    spread_sample,
    theoretical_file_bytes,
)
from quads.data import SPLITS, Corpus, LabelMap, Utterance, open_corpus
from quads.data.fsc import fsc_split_file
from quads.data.slurp import SLURP_SPLIT_FILES
from quads.errors import ConfigError, DataError
from quads.features import FeatureCache, compute_features
from quads.runtime.model import load
from quads.training.batches import ExampleSet
from quads.training.inference import predict_logits

BATCH_SIZE = 32


@dataclass(frozen=True)
class IntentScores:
    intent: str
    precision: float
    recall: float
    f1: float
    support: int  # utterances of this intent in the data


@dataclass
class EvaluationResult:
    """Everything `quads eval` measures; fractions in [0, 1], sizes in bytes, latency in milliseconds."""

    model_file: str
    data: str
    split: str
    recipe: str | None
    bits: int | None
    utterances: int
    accuracy: float
    f1: float  # macro-F1 over `intents`
    intents: list[str]  # intents occurring in the data or the predictions, in label-map order
    per_intent: list[IntentScores]
    confusion: list[list[int]]  # [true intent][predicted intent], both over `intents`
    params: int
    size_bytes: int
    theoretical_bytes: int
    gmacs: float  # mean over the utterances, each at its real length
    gmacs_30s: float
    mean_frames: float
    latency_ms_median: float | None
    latency_ms_p90: float | None
    latency_samples: int
    torch_threads: int
    training_metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    def to_row(self, method: str, seed: int | None = None) -> dict[str, Any]:
        """A results row for `quads.commands.report` (see `quads.commands.report.write_results`)."""
        row: dict[str, Any] = {
            "method": method, "bits": self.bits, "params": self.params, "size_bytes": self.size_bytes,
            "theoretical_bytes": self.theoretical_bytes, "gmacs": self.gmacs, "gmacs_30s": self.gmacs_30s,
            "accuracy": self.accuracy, "f1": self.f1, "model_file": self.model_file,
        }
        if seed is not None:
            row["seed"] = seed
        return row

    def to_markdown(self) -> str:
        latency = (f"{self.latency_ms_median:.2f} ms median, {self.latency_ms_p90:.2f} ms p90 "
                   f"({self.latency_samples} utterances, batch 1, {self.torch_threads} torch threads)"
                   if self.latency_ms_median is not None and self.latency_ms_p90 is not None else "not measured")
        lines = [
            f"# Evaluation of `{Path(self.model_file).name}`",
            "",
            f"Data: `{self.data}`, split `{self.split}`, {self.utterances} utterances; "
            f"recipe {self.recipe or 'unknown'}, {self.bits if self.bits is not None else '?'} bits.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| accuracy | {100 * self.accuracy:.2f} % |",
            f"| macro-F1 ({len(self.intents)} intents) | {100 * self.f1:.2f} % |",
            f"| parameters | {self.params:,} |",
            f"| size on disk | {self.size_bytes:,} bytes ({self.size_bytes / 2**20:.3f} MB) |",
            f"| theoretical size | {self.theoretical_bytes:,} bytes ({self.theoretical_bytes / 2**20:.3f} MB) |",
            f"| GMACs per utterance (real length, mean {self.mean_frames:.0f} frames) | {self.gmacs:.4f} |",
            f"| GMACs at {WHISPER_SECONDS} s | {self.gmacs_30s:.4f} |",
            f"| CPU latency per utterance | {latency} |",
            "",
            "| intent | precision (%) | recall (%) | F1 (%) | support |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {s.intent} | {100 * s.precision:.1f} | {100 * s.recall:.1f} | {100 * s.f1:.1f} | {s.support} |"
                  for s in self.per_intent]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        latency = f", {self.latency_ms_median:.1f} ms/utt" if self.latency_ms_median is not None else ""
        return (f"{Path(self.model_file).name} on {self.split} ({self.utterances} utterances): "
                f"accuracy {100 * self.accuracy:.2f} %, macro-F1 {100 * self.f1:.2f} %, {self.params:,} params, "
                f"{self.size_bytes:,} bytes on disk ({self.theoretical_bytes:,} theoretical), "
                f"{self.gmacs:.4f} GMACs ({self.gmacs_30s:.3f} at {WHISPER_SECONDS} s){latency}")


# ---------------------------------------------------------------------------------------------- data


def split_source(corpus: Corpus, data: Path, split: str) -> Path:
    """The file that lists a split's utterances, so errors point the user at it."""
    if corpus.name == "fsc":
        return fsc_split_file(corpus.root, split)
    if corpus.name == "slurp":
        return corpus.root / SLURP_SPLIT_FILES[split]
    return data


def load_evaluation_split(data: str | Path, split: str, labels: Sequence[str]) -> tuple[list[Utterance], Path]:
    """The utterances of `split` of a corpus folder or manifest, all with intents the model knows."""
    if split not in SPLITS:
        raise DataError(f"{data}: split {split!r} is not one of {', '.join(SPLITS)}")
    data = Path(data).expanduser()
    corpus = open_corpus(data)
    source = split_source(corpus, data, split)
    utterances = corpus.splits.get(split, [])
    if not utterances:
        raise DataError(f"{source}: split {split!r} has no utterances to evaluate")
    model_map = LabelMap(labels)
    unknown = Counter(utterance.label for utterance in utterances if utterance.label not in model_map)
    if unknown:
        listed = ", ".join(f"{label!r} ({count})" for label, count in sorted(unknown.items()))
        raise DataError(
            f"{source}: {sum(unknown.values())} utterances of split {split!r} have intents the model was not "
            f"trained on: {listed}; the model knows {len(model_map)} intents"
        )
    return utterances, source


# ---------------------------------------------------------------------------------------------- scores


@torch.inference_mode()
def predict_features(classifier: torch.nn.Module, features: Sequence[torch.Tensor],
                     batch_size: int = BATCH_SIZE, progress: bool = False) -> list[int]:
    """Predicted class index per [n_mels, T] feature tensor, in input order (batched by length)."""
    examples = ExampleSet(features, [0] * len(features), time_dim=1)
    return predict_logits(classifier, examples, batch_size, progress).argmax(-1).tolist()


def score_predictions(truth: Sequence[int], predicted: Sequence[int], labels: Sequence[str]
                      ) -> tuple[float, float, list[str], list[IntentScores], list[list[int]]]:
    """Accuracy, macro-F1, the intents scored, per-intent scores and the confusion matrix (see module docstring)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    present = sorted(set(truth) | set(predicted))
    accuracy = float(accuracy_score(truth, predicted))
    macro_f1 = float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0))
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=present,
                                                                     zero_division=0)
    per_intent = [IntentScores(labels[index], float(p), float(r), float(f), int(s))
                  for index, p, r, f, s in zip(present, precision, recall, f1, support, strict=True)]
    confusion = confusion_matrix(truth, predicted, labels=present).tolist()
    return accuracy, macro_f1, [labels[index] for index in present], per_intent, confusion


# ---------------------------------------------------------------------------------------------- the whole evaluation


def warn_about_inputs(utterances: Sequence[Utterance], sample_rate: int) -> None:
    """One warning per kind for audio the scores may mislead on: recorded below the model's rate, or far longer
    than the commands it was trained on (see `quads.audio.warn_if_misleading`)."""
    import soundfile

    low, long = [], []
    for utterance in utterances:
        try:
            info = soundfile.info(str(utterance.path))
        except (soundfile.SoundFileError, RuntimeError, OSError, ValueError, TypeError):
            continue  # reported with its path when the audio is read
        if info.samplerate < sample_rate:
            low.append(utterance.path)
        if info.frames / info.samplerate > LONG_CLIP_SECONDS:
            long.append(utterance.path)
    if low:
        warnings.warn(f"{len(low)} of {len(utterances)} audio files (e.g. {low[0]}) are recorded below the "
                      f"{sample_rate} Hz the model was trained on; they are upsampled, but the missing high band "
                      "can change the predictions", AudioWarning, stacklevel=2)
    if long:
        warnings.warn(f"{len(long)} of {len(utterances)} audio files (e.g. {long[0]}) are longer than "
                      f"{LONG_CLIP_SECONDS:.0f} s, far longer than the commands the model was trained on; each "
                      "gets one intent for the whole file", AudioWarning, stacklevel=2)


def evaluate_model_file(model_path: str | Path, data: str | Path, split: str = "test", *,
                        cache_dir: str | Path | None = None, latency_samples: int = 50,
                        batch_size: int = BATCH_SIZE, progress: bool = True,
                        as_recorded: bool = False) -> EvaluationResult:
    """Score a packed model file on a split of a corpus folder (FSC / SLURP layout) or a manifest CSV.

    `cache_dir`: a feature cache folder (`quads.features.FeatureCache`) to reuse log-mels; None computes them.
    `latency_samples`: utterances timed for CPU latency (0 skips the measurement).
    `as_recorded`: score every clip whole and at its own level, as the runtime does with `score_window = False`;
    by default long pauses are trimmed, a level outside the training clips' is moved into it and over-long clips
    are cut to their loudest window, as the runtime does (`quads.runtime.speech_window`).
    """
    model = load(model_path)
    model.score_window = not as_recorded
    utterances, _ = load_evaluation_split(data, split, model.labels)
    label_map = LabelMap(model.labels)
    truth = [label_map.encode(utterance.label) for utterance in utterances]

    warn_about_inputs(utterances, model.frontend_config.sample_rate)
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    features = compute_features(utterances, model.frontend_config, cache, batch_size=batch_size, progress=progress)
    features, cropped = model.scored_clips(features)
    if cropped:
        warnings.warn(f"{len(cropped)} of {len(utterances)} audio files (e.g. {utterances[cropped[0]].path}) are "
                      f"longer than the {model.max_seconds:g} s the model hears at once, even with their pauses "
                      f"trimmed; each was scored on its loudest {model.max_seconds:g} s", AudioWarning, stacklevel=2)
    predicted = predict_features(model.classifier, features, batch_size, progress)
    accuracy, macro_f1, intents, per_intent, confusion = score_predictions(truth, predicted, model.labels)

    n_mels = model.frontend_config.n_mels
    frame_counts = [int(tensor.shape[1]) for tensor in features]
    frames_30s = WHISPER_SECONDS * model.frontend_config.sample_rate // model.frontend_config.hop_length
    gmacs = mean_gmacs(model.classifier, n_mels, frame_counts, progress)
    with single_threaded():
        gmacs_30s = gmacs_for_architecture(model.classifier, n_mels, frames_30s)

    median = p90 = None
    timed = spread_sample(len(utterances), max(0, latency_samples))
    if timed:
        sample_rate = model.frontend_config.sample_rate
        waveforms = [load_audio(utterances[index].path, sample_rate) for index in timed]
        median, p90 = measure_latency(model, waveforms, progress)

    metadata = model.metadata
    return EvaluationResult(
        model_file=str(model_path), data=str(data), split=split,
        recipe=metadata.get("recipe"), bits=metadata.get("bits"),
        utterances=len(utterances), accuracy=accuracy, f1=macro_f1, intents=intents, per_intent=per_intent,
        confusion=confusion, params=sum(parameter.numel() for parameter in model.classifier.parameters()),
        size_bytes=os.path.getsize(model_path), theoretical_bytes=theoretical_file_bytes(model_path),
        gmacs=gmacs, gmacs_30s=gmacs_30s, mean_frames=float(np.mean(frame_counts)),
        latency_ms_median=median, latency_ms_p90=p90, latency_samples=len(timed),
        torch_threads=torch.get_num_threads(), training_metrics=dict(metadata.get("metrics") or {}),
    )


# ---------------------------------------------------------------------------------------------- output files


def confusion_csv(intents: Sequence[str], confusion: Sequence[Sequence[int]]) -> str:
    """Rows are true intents, columns predicted ones; the top-left cell names the axes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *intents])
    for intent, counts in zip(intents, confusion, strict=True):
        writer.writerow([intent, *counts])
    return buffer.getvalue()


def per_intent_csv(per_intent: Sequence[IntentScores]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["intent", "precision", "recall", "f1", "support"])
    for scores in per_intent:
        writer.writerow([scores.intent, f"{scores.precision:.6f}", f"{scores.recall:.6f}", f"{scores.f1:.6f}",
                         scores.support])
    return buffer.getvalue()


def confusion_png(intents: Sequence[str], confusion: Sequence[Sequence[int]], title: str) -> bytes:
    """The confusion matrix as a PNG, coloured by row share (recall), sized so 30-60 intents stay readable."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, safe in any process

    counts = np.asarray(confusion, dtype=float).reshape(len(intents), len(intents))
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 2.5 + 0.22 * len(intents))
    font = 8 if len(intents) <= 30 else 6
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ticks = np.arange(len(intents))
    axes.set_xticks(ticks, labels=intents, rotation=90, fontsize=font)
    axes.set_yticks(ticks, labels=intents, fontsize=font)
    axes.set_xlabel("predicted intent")
    axes.set_ylabel("true intent")
    axes.set_title(title, fontsize=10)
    if len(intents) <= 20:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                axes.text(column, row, f"{int(count)}", ha="center", va="center", fontsize=font,
                          color="white" if shares[row, column] > 0.5 else "black")
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true intent's utterances")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_evaluation(result: EvaluationResult, out_dir: str | Path) -> dict[str, Path]:
    """eval.json, eval.md, per_intent.csv, confusion.csv and confusion.png in `out_dir`, each written atomically."""
    out_dir = Path(out_dir)
    paths = {name: out_dir / name for name in ("eval.json", "eval.md", "per_intent.csv", "confusion.csv",
                                                "confusion.png")}
    atomic_write_text(paths["eval.json"], result.to_json() + "\n")
    atomic_write_text(paths["eval.md"], result.to_markdown())
    atomic_write_text(paths["per_intent.csv"], per_intent_csv(result.per_intent))
    atomic_write_text(paths["confusion.csv"], confusion_csv(result.intents, result.confusion))
    title = (f"{Path(result.model_file).name}, {result.split}: accuracy {100 * result.accuracy:.1f} %, "
             f"macro-F1 {100 * result.f1:.1f} %")
    atomic_write_bytes(paths["confusion.png"], confusion_png(result.intents, result.confusion, title))
    return paths


# ---------------------------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="packed model file from `quads export`")
    parser.add_argument("--data", type=Path, required=True,
                        help="corpus folder (FSC or SLURP layout) or a manifest .csv (path,label[,speaker])")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to evaluate (a manifest without a "
                        "split column is all 'test'; default: test)")
    parser.add_argument("--json", type=Path, required=True, help="write the results as JSON here")
    parser.add_argument("--out-dir", type=Path, help="also write eval.json, eval.md, per_intent.csv, "
                        "confusion.csv and confusion.png here")
    parser.add_argument("--cache", type=Path, help="feature cache folder to reuse log-mels (default: none)")
    parser.add_argument("--latency-samples", type=int, default=50,
                        help="utterances timed for CPU latency, batch size 1 (0: skip; default: 50)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="utterances per scoring batch")
    parser.add_argument("--threads", type=int, help="torch CPU threads for scoring and latency (default: torch's; "
                        "1 gives the steadiest latency on a shared machine)")
    parser.add_argument("--as-recorded", action="store_true", help="score every clip whole, at its own level "
                        "(default: silences longer than any training clip has are trimmed, a level outside the "
                        "training clips' is moved into it, and a clip longer than the model hears at once is cut to "
                        "its loudest window, as `quads predict` and the runtime do)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    result = evaluate_model_file(args.model, args.data, args.split, cache_dir=args.cache,
                                 latency_samples=args.latency_samples, batch_size=args.batch_size,
                                 progress=not args.quiet, as_recorded=args.as_recorded)
    atomic_write_text(args.json, result.to_json() + "\n")
    print(result.summary())
    print(f"wrote {args.json}")
    if args.out_dir is not None:
        write_evaluation(result, args.out_dir)
        print(f"wrote eval.json, eval.md, per_intent.csv, confusion.csv, confusion.png to {args.out_dir}")
    return 0
