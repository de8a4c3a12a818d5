"""Seeded mutations of the tiny model file, written by `save_packed` itself so every checksum is valid: what
`quads.load` must refuse with a ModelFileError (or load, when the change is harmless), never a traceback."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from quads.compression.packed import save_packed
from quads.errors import QuadsError
from quads.runtime.model import load

JUNK: tuple[Any, ...] = (None, True, False, 0, -1, 1, 2, 3, 7, 80, 128, 400, 160, 16000, 2**31, 2**63, -(2**40), 0.5,
                         400.5, 1e11, 1e308, -0.0, "", "16000", "conv", "transformer", "whisper", "mlp", "x" * 300,
                         [], [1], [100000, 3], [2, 2], [16], ["a", "b"], {}, {"type": "conv"}, {"kind": "mlp"})


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every place in a JSON document (dict keys and list indices), depth first."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _parent(document: Any, path: tuple) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


def mutate_metadata(metadata: dict, rng: random.Random) -> None:
    places = [path for path in _paths(metadata) if path]
    path = rng.choice(places)
    parent = _parent(metadata, path)
    kind = rng.random()
    if kind < 0.6:
        parent[path[-1]] = copy.deepcopy(rng.choice(JUNK))
    elif kind < 0.75:
        del parent[path[-1]]
    elif kind < 0.85 and isinstance(parent, dict):
        parent[rng.choice(["extra", "type", "n_mels", "head", "hidden_dim"])] = copy.deepcopy(rng.choice(JUNK))
    elif isinstance(parent[path[-1]], (int, float)) and not isinstance(parent[path[-1]], bool):
        parent[path[-1]] = parent[path[-1]] * rng.choice([-1, 0, 2, 1000, 0.5])
    else:
        parent[path[-1]] = copy.deepcopy(rng.choice(JUNK))


def mutate_tensors(state: dict[str, torch.Tensor], rng: random.Random) -> None:
    name = rng.choice(sorted(state))
    tensor = state[name].clone()
    kind = rng.randrange(7)
    if kind == 0:
        tensor.view(-1)[rng.randrange(tensor.numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
    elif kind == 1:
        tensor = tensor.to(rng.choice([torch.int32, torch.int64, torch.bool, torch.uint8, torch.float16,
                                       torch.float64]))
    elif kind == 2:
        tensor = tensor.reshape(-1) if tensor.ndim > 1 else tensor.reshape(1, -1)
    elif kind == 3:
        tensor = torch.cat([tensor.reshape(-1), torch.zeros(rng.choice([1, 7, 1000]))])
    elif kind == 4:
        del state[name]
        return
    elif kind == 5:
        state[name + rng.choice(["_extra", ".x"])] = tensor
        return
    else:
        tensor = tensor * rng.choice([0.0, -1.0, 1e30, 1e-30])
    state[name] = tensor


def fuzzed_files(parts: tuple[dict, dict, dict], folder: Path, count: int, seed: int) -> Iterator[Path]:
    """`count` mutated model files with valid checksums (one path, rewritten each time)."""
    float_state, quantized, metadata = parts
    rng = random.Random(seed)
    path = folder / "fuzzed.quads"
    written = 0
    while written < count:
        new_metadata, new_state = copy.deepcopy(metadata), dict(float_state)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            if rng.random() < 0.7:
                mutate_metadata(new_metadata, rng)
            else:
                mutate_tensors(new_state, rng)
        try:
            save_packed(path, new_state, quantized, new_metadata)
        except (QuadsError, ValueError, TypeError):
            continue  # the writer refused it (e.g. not JSON-able): nothing to load
        written += 1
        yield path


def load_outcome(path: Path) -> str:
    """'loaded', 'refused' (a QuadsError) or the name of any other exception type: a bug."""
    try:
        load(path)
    except QuadsError:
        return "refused"
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:300]
    return "loaded"
