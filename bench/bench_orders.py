"""A long-sentence task: ten shopping items, each intent hanging on one word inside a 3-5 s sentence.

"Could you add three *eggs* to my shopping list for Friday": the item is the intent, every other word (amounts,
days, places, times) is a distractor drawn at random, so a model must find the one word that matters. Train,
valid and test use different sentence templates (pinned with the phrase table's `split` column) and, as in the
built-in corpus, different voices, so test measures held-out wordings and voices. Trains the teacher head and
the students with the default settings (or --config / --set) and prints test accuracy per model.

    .venv/bin/python bench/bench_orders.py --out runs/orders
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from quads.cache_dir import cache_root
from quads.commands.grid import Cell, run_grid
from quads.commands.report import results_markdown
from quads.config import load_config, scale_epochs
from quads.synth import synthesize_corpus

ITEMS = ("apples", "bread", "butter", "cheese", "coffee", "eggs", "milk", "rice", "sugar", "tea")
TEMPLATES = {
    "train": (
        "could you add {qty} {item} to my shopping list for {day}",
        "I would like to order {qty} {item} and have them delivered to the {place} at {time}",
        "please remind me to pick up {item} on my way home from the {place} on {day}",
        "we are running low on {item} so put it on the list before {day}",
        "tomorrow at {time} I need you to buy {qty} {item} from the store near the {place}",
        "hey, make a note that the {place} is out of {item} and we need {qty} by {day}",
    ),
    "valid": ("order {qty} {item} for {day} morning and send it to the {place}",),
    "test": (
        "on {day} afternoon please get {qty} {item} for the party at the {place}",
        "my neighbour asked me to grab {item} while I am at the {place} around {time}",
    ),
}
SLOTS = {
    "qty": ("two", "three", "a few", "some", "four", "a dozen"),
    "day": ("Monday", "Tuesday", "Friday", "the weekend", "Sunday"),
    "place": ("office", "gym", "school", "station", "market"),
    "time": ("six", "noon", "seven thirty", "nine", "five o'clock"),
}
VARIANTS = 2  # slot fillings per template and item
UTTERANCES_PER_ITEM = 2  # per speaker and item in valid and test
# Train speakers say each item 4 times (1,480 clips) at the configured epochs: the steps of the previous 2 times
# at twice the epochs (`--train-per-intent 2 --epoch-factor 2`), 4-bit test +3.5 points over 3 seeds (bench/README).
TRAIN_UTTERANCES_PER_ITEM = 4
ORDERS_EPOCH_FACTOR = 1
DEFAULT_SPEAKERS = 48


def write_order_phrases(path: Path, seed: int = 0) -> int:
    rng = random.Random(f"quads-orders-{seed}")
    lines = ["transcription\tintent\tsplit"]
    for item in ITEMS:
        for split, templates in TEMPLATES.items():
            for template in templates:
                for _ in range(VARIANTS):
                    words = {name: rng.choice(values) for name, values in SLOTS.items()}
                    sentence = template.format(item=item, **words)
                    lines.append(f"{sentence[0].upper()}{sentence[1:]}\t{item}\t{split}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/orders"))
    parser.add_argument("--speakers", type=int, default=DEFAULT_SPEAKERS)
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--train-per-intent", type=int, default=TRAIN_UTTERANCES_PER_ITEM,
                        help=f"how often each train speaker says each item (default {TRAIN_UTTERANCES_PER_ITEM}; "
                             f"valid and test: always {UTTERANCES_PER_ITEM}); each count is a corpus of its own")
    parser.add_argument("--epoch-factor", type=int, default=ORDERS_EPOCH_FACTOR,
                        help=f"train this many times the configured epochs (default {ORDERS_EPOCH_FACTOR})")
    parser.add_argument("--config", type=Path, help="YAML recipe (default: the built-in settings)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    started = time.perf_counter()
    config = load_config(args.config, args.overrides)
    # v2: the default augmentation with rooms and microphones (v1 was synthesised before they existed)
    # each speaker count and train count is a corpus of its own (the defaults keep the folder of the figures)
    name = ("orders-v2" + ("" if args.speakers == DEFAULT_SPEAKERS else f"-speakers{args.speakers}")
            + ("" if args.train_per_intent == UTTERANCES_PER_ITEM else f"-train{args.train_per_intent}"))
    corpus_dir = cache_root(config.data) / "corpora" / name
    table = corpus_dir.with_name("orders-v2.tsv")
    write_order_phrases(table)
    print(synthesize_corpus(corpus_dir, table, speakers=args.speakers, seed=0,
                            utterances_per_intent=UTTERANCES_PER_ITEM,
                            train_utterances_per_intent=args.train_per_intent).summary())
    config = scale_epochs(replace(config, data=replace(config.data, path=str(corpus_dir))), args.epoch_factor)
    cells = [Cell("distill", 32, config.seed), *(Cell("quads", bits, config.seed) for bits in args.bits)]
    rows, _ = run_grid(config, cells, args.out, latency_samples=0)
    print()
    print(results_markdown(rows, "Long sentences: 10 items, each one word inside a 3-5 s sentence (held-out "
                                 "templates and voices in test)"))
    print(f"wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
