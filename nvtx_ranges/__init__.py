"""nvtx_ranges: mark phases, steps, layers and operators of an inference loop.

One annotation emits an NVTX range (Nsight Systems) and a
``torch.profiler.record_function`` range (Kineto) of the same text, so the same code
is traceable by either profiler.  The names form tracekit's ``tracekit`` phase map::

    phase("prefill")  -> "phase:prefill"
    step(batch_size=8, tokens=1024) -> "step"   (payload in a marker, see below)
    layer(3)          -> "layer.3"
    op("_ffn")        -> "_ffn"

Each is a context manager and a decorator::

    import nvtx_ranges as nr
    with nr.phase("decode"), nr.step(batch_size=8, tokens=8):
        for i, blk in enumerate(blocks):
            with nr.layer(i):
                ...

``instrument(model)`` adds ranges to a ``torch.nn.Module`` tree by hooks.
``TRACEKIT_NVTX=0`` (or ``disable()``) turns everything off.  Payloads: see
``nvtx_ranges._core``'s docstring.
"""

from nvtx_ranges._core import (
    NVTX_BACKEND,
    PAYLOAD_PREFIX,
    Range,
    disable,
    enable,
    enabled,
    layer,
    op,
    phase,
    step,
)
from nvtx_ranges.instrument import LLAMA_RULES, InstrumentHandle, Rule, instrument

__all__ = [
    "LLAMA_RULES",
    "NVTX_BACKEND",
    "PAYLOAD_PREFIX",
    "InstrumentHandle",
    "Range",
    "Rule",
    "disable",
    "enable",
    "enabled",
    "instrument",
    "layer",
    "op",
    "phase",
    "step",
]
