"""What to quantize and how finely: the spec of a quantized model and the tensors it selects.

Apart from the training-time quantizer (`quads.compression.quantize`) because export, PTQ and the packed file
need only the selection, not the straight-through machinery.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field

from torch import nn

from quads.compression.codebook import FLOAT_BITS, has_codebook, validate_bits
from quads.errors import ConfigError


@dataclass
class QuantizationSpec:
    """What to quantize and how finely.

    `bits` applies to every selected tensor unless a `per_layer` pattern (fnmatch on the parameter name, the
    first matching pattern wins) sets another width: 1/2/3/4/8 for a codebook, 16 for float16, 32 to keep it
    float. `min_bits` patterns are floors applied after that: a matching tensor gets at least their width
    (sensitive tensors stay wider in a 2-bit model without being narrowed in an 8-bit one). Selected are the
    parameters with at least `include_ndim_at_least` dimensions (Linear, Conv1d and embedding weights; biases
    and norm weights stay float), minus those matching an `exclude` pattern.
    A tensor with fewer than `min_numel_per_centroid * 2^b` elements is kept float with a warning: with fewer
    than a few weights per centroid the codebook costs about as much as it saves and hardly constrains them.
    `iterations` bounds the Lloyd iterations of each k-means fit. `weights_per_centroid` 0 gives each tensor one
    codebook; N > 0 splits a b-bit tensor into runs of whole rows of about N * 2^b weights
    (`quads.compression.codebook.group_length`), each with its own codebook: a float16 codebook then costs about
    16 / (N * b) of the bytes of its indices, whatever the width.
    """

    bits: int = 4
    per_layer: dict[str, int] = field(default_factory=dict)
    min_bits: dict[str, int] = field(default_factory=dict)
    include_ndim_at_least: int = 2
    exclude: list[str] = field(default_factory=list)
    iterations: int = 25
    min_numel_per_centroid: int = 4
    weights_per_centroid: int = 0

    def __post_init__(self) -> None:
        validate_bits(self.bits)
        for key, patterns in (("per_layer", self.per_layer), ("min_bits", self.min_bits)):
            for pattern, bits in patterns.items():
                try:
                    validate_bits(bits)
                except ConfigError as error:
                    raise ConfigError(f"{key}[{pattern!r}]: {error}") from None
        if self.iterations < 1:
            raise ConfigError(f"iterations must be at least 1, got {self.iterations}")
        if self.weights_per_centroid < 0:
            raise ConfigError(f"weights_per_centroid must be 0 (one codebook per tensor) or positive, "
                              f"got {self.weights_per_centroid}")

    def bits_for(self, name: str) -> int:
        """The width for parameter `name`: the first matching per_layer pattern, else `bits`; raised to the
        widest matching `min_bits` floor."""
        width = next((bits for pattern, bits in self.per_layer.items() if fnmatch.fnmatchcase(name, pattern)),
                     self.bits)
        floors = [bits for pattern, bits in self.min_bits.items() if fnmatch.fnmatchcase(name, pattern)]
        return max([width, *floors])


def select_quantized_tensors(model: nn.Module, spec: QuantizationSpec) -> dict[str, int]:
    """Map each parameter that gets quantized (codebook or float16) to its bit width, in model order."""
    selected: dict[str, int] = {}
    for name, param in model.named_parameters():
        if param.ndim < spec.include_ndim_at_least or not param.is_floating_point():
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in spec.exclude):
            continue
        bits = spec.bits_for(name)
        if bits == FLOAT_BITS:
            continue
        if has_codebook(bits) and param.numel() < spec.min_numel_per_centroid * 2**bits:
            warnings.warn(
                f"{name} ({param.numel()} weights) is too small for a {bits}-bit codebook of {2**bits} centroids "
                f"(needs at least {spec.min_numel_per_centroid * 2**bits}); keeping it float",
                stacklevel=2,
            )
            continue
        selected[name] = bits
    return selected
