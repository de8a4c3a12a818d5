"""Per-wording accuracy: which held-out wordings the model files miss, and what they hear instead.

    .venv/bin/python bench/bench_wordings.py MODEL.quads [MODEL.quads ...] \
        [--corpus ~/.cache/quads/corpora/commands-v8] [--split test] [--out runs/wordings.md]

Reads an FSC-layout corpus split (the built-in corpus by default), predicts every clip with each packed model
file and writes one row per (intent, wording): clips, and each file's accuracy on them, worst first; then the
first file's most frequent confusions (wording -> predicted intent).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

from tqdm import tqdm

from quads.data.fsc import load_fsc
from quads.errors import DataError
from quads.runtime.model import load
from quads.training.experiment import default_corpus_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--corpus", type=Path, default=default_corpus_dir())
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    try:
        utterances = load_fsc(args.corpus).splits[args.split]
    except DataError as error:
        print(f"{error}; synthesise the corpus first (quads demo or quads synth)", file=sys.stderr)
        return 1
    keys = [(utterance.label, utterance.transcription) for utterance in utterances]
    correct = {key: [0] * len(args.models) for key in keys}
    confusions: collections.Counter[tuple[str, str]] = collections.Counter()
    for column, path in enumerate(args.models):
        model = load(path)
        for start in tqdm(range(0, len(utterances), args.batch), desc=path.name, unit="batch"):
            chunk = utterances[start:start + args.batch]
            predicted = model.predict_files([utterance.path for utterance in chunk])
            for offset, prediction in enumerate(predicted):
                key = keys[start + offset]
                correct[key][column] += prediction.label == key[0]
                if column == 0 and prediction.label != key[0]:
                    confusions[(key[1], prediction.label)] += 1
    clips = collections.Counter(keys)
    lines = ["| intent | wording | clips | " + " | ".join(path.stem for path in args.models) + " |",
             "|---|---|---|" + "---|" * len(args.models)]
    for key in sorted(correct, key=lambda k: (sum(correct[k]) / clips[k], k)):
        scores = " | ".join(f"{100 * hits / clips[key]:.0f}" for hits in correct[key])
        lines.append(f"| {key[0]} | {key[1]} | {clips[key]} | {scores} |")
    lines += ["", f"Most frequent confusions of {args.models[0].name} (clips, wording -> heard as):", ""]
    lines += [f"- {count}: \"{wording}\" -> {label}" for (wording, label), count in confusions.most_common(20)]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
