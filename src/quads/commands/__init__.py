"""The commands on top of the layers: `quads compress`, `export`, `eval`, `predict`, `demo` and `ablate` (with
the grid of runs, the λ sweep, the FSDD real-speech check, paired statistics and the report they share). Each
command module exposes `configure(parser)` and `run(args)`; `quads.cli` only lists them."""
