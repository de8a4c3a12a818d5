"""The one way quads opens an onnxruntime session: CPU only, a set number of threads, warnings off."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(model: str | Path | bytes, threads: int = 1, log_severity: int = 3) -> Any:
    """An `onnxruntime.InferenceSession` on the CPU for a model file or serialized model.

    `threads` bounds the intra-op pool; inter-op parallelism stays at 1 (a small graph gains nothing from it and
    a shared machine loses). `log_severity` 3 shows errors only, 4 only fatal ones.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = log_severity
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
