"""`quads synth`: the command-line face of `synthesize_corpus` and `synthesize_slurp_corpus`."""

from __future__ import annotations

import argparse

from quads.errors import ConfigError
from quads.synth.corpus import (
    DEFAULT_PIPER_SPEAKERS,
    DEFAULT_SPEAKERS,
    DEFAULT_UTTERANCES_PER_INTENT,
    synthesize_corpus,
    synthesize_slurp_corpus,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="corpus folder to write (FSC layout)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--phrases", metavar="TSV",
                        help="phrase table: `transcription action object location` or `transcription intent` "
                             "(default: the built-in 31-intent command table)")
    source.add_argument("--from-slurp", metavar="DIR",
                        help="speak the `sentence` of each record in DIR/{train,devel,test}.jsonl instead")
    parser.add_argument("--limit", type=int, metavar="N", help="with --from-slurp: at most N records per split")
    parser.add_argument("--speakers", type=int, default=DEFAULT_SPEAKERS, metavar="N",
                        help=f"espeak-ng and flite speakers, split 70/15/15 (default {DEFAULT_SPEAKERS})")
    parser.add_argument("--piper-speakers", type=int, default=DEFAULT_PIPER_SPEAKERS, metavar="N",
                        help="settings of the neural piper voice added to train and valid, phrase tables only "
                             f"(default {DEFAULT_PIPER_SPEAKERS}; 0: none)")
    parser.add_argument("--kokoro-speakers", type=int, default=0, metavar="N",
                        help="settings of the Kokoro voices (five Japanese speakers speaking English) added to "
                             "train and valid, phrase tables only (default 0)")
    parser.add_argument("--per-intent", type=int, default=None, metavar="K",
                        help=f"utterances of each intent per speaker (default {DEFAULT_UTTERANCES_PER_INTENT}; "
                             "not with --from-slurp, which says each record once)")
    parser.add_argument("--train-per-intent", type=int, default=None, metavar="K",
                        help="utterances of each intent per train speaker (default: as --per-intent): more clips "
                             "to train on, valid and test planned as they would be without it")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same corpus, byte for byte (default 0)")
    parser.add_argument("--jobs", type=int, default=None, metavar="J",
                        help="parallel TTS processes (default: all CPU cores)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="augmentation: noise, gain, speed, silence, rooms (reverberation) and microphones "
                             "(band limits) (default: on)")
    parser.add_argument("--force", action="store_true",
                        help="replace a corpus made with other settings (deletes its data/ and wavs/speakers/)")
    parser.add_argument("--wait", action="store_true", help="if another process is writing --out, wait for it "
                        "instead of stopping")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    common = {"speakers": args.speakers, "seed": args.seed, "jobs": args.jobs, "augment": args.augment,
              "force": args.force, "progress": not args.quiet, "wait": args.wait}
    if args.from_slurp:
        if args.per_intent is not None or args.train_per_intent is not None:
            raise ConfigError("--per-intent and --train-per-intent apply to phrase tables; --from-slurp says each "
                              "record once")
        report = synthesize_slurp_corpus(args.out, args.from_slurp, limit=args.limit, **common)
    else:
        if args.limit is not None:
            raise ConfigError("--limit applies only with --from-slurp (a phrase table is always spoken whole)")
        per_intent = DEFAULT_UTTERANCES_PER_INTENT if args.per_intent is None else args.per_intent
        report = synthesize_corpus(args.out, args.phrases, utterances_per_intent=per_intent,
                                   train_utterances_per_intent=args.train_per_intent,
                                   piper_speakers=args.piper_speakers, kokoro_speakers=args.kokoro_speakers,
                                   **common)
    print(report.summary())
    return 0
