"""The `quads` command line: a thin layer over the Python API.

Each subcommand lives in the module that implements it and exposes `configure(parser)` and `run(args)`;
this file only lists them, so `quads --help` starts fast and a broken optional module cannot break the rest.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from quads import __version__
from quads.errors import QuadsError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("quads.synth.command", "synthesise a spoken-command corpus in the FSC layout with offline TTS"),
    "features": ("quads.features", "compute and cache log-mel features for a corpus"),
    "pretune": ("quads.training.pretune", "stage 0: train the teacher's intent head on a corpus"),
    "compress": ("quads.commands.compress", "run a compression recipe: quads, ptq, qat or sequential"),
    "export": ("quads.commands.export", "write a trained run as one packed model file"),
    "predict": ("quads.commands.predict", "print the intents a packed model file hears in WAV files"),
    "eval": ("quads.commands.evaluate", "evaluate a packed model file on a corpus or manifest"),
    "demo": ("quads.commands.demo", "the whole QUADS story on the embedded default corpus"),
    "ablate": ("quads.commands.ablate", "the full ablation grid: recipes x bit widths x seeds"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quads", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"quads {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith("quads"):
            print(f"quads {name}: not available in this version", file=sys.stderr)
            return 2
        raise
    sub = argparse.ArgumentParser(prog=f"quads {name}", description=help_text)
    module.configure(sub)
    args = sub.parse_args(rest)
    try:
        result = module.run(args)
    except QuadsError as error:
        print(f"quads {name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"quads {name}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
