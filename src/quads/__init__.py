"""quads: distil a large speech teacher into a tiny intent classifier and quantize it with k-means codebooks."""

__version__ = "0.1.0"
