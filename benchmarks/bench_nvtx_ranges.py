"""Cost of one nvtx_ranges range (enter + exit), in ns, in each state.

    python benchmarks/bench_nvtx_ranges.py [--n 200000] [--json]

States: disabled (TRACEKIT_NVTX=0 / disable()); enabled with no profiler attached
(the everyday state: NVTX calls are no-ops without an injected tool, and Kineto is
skipped unless a torch profiler runs); enabled under torch.profiler (CPU); and a
bare ``torch.profiler.record_function`` and empty ``with`` loop for scale.  Each
number is the best of 5 repeats of n ranges, minus nothing (loop overhead included;
the empty loop shows it).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext

import nvtx_ranges as nr


def per_range_ns(make: Callable[[], object], n: int, reuse: bool = False) -> float:
    best = float("inf")
    obj = make()
    for _ in range(5):
        t0 = time.perf_counter_ns()
        if reuse:
            for _ in range(n):
                with obj:  # type: ignore[attr-defined]
                    pass
        else:
            for _ in range(n):
                with make():  # type: ignore[attr-defined]
                    pass
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    n = a.n
    res: dict[str, float] = {}
    res["empty with (nullcontext)"] = per_range_ns(nullcontext, n)

    nr.disable()
    res["disabled: op('_ffn')"] = per_range_ns(lambda: nr.op("_ffn"), n)
    res["disabled: step(batch_size, tokens)"] = per_range_ns(
        lambda: nr.step(batch_size=8, tokens=8), n
    )
    nr.enable()
    res["enabled, no profiler: op('_ffn')"] = per_range_ns(lambda: nr.op("_ffn"), n)
    res["enabled, no profiler: op reused"] = per_range_ns(lambda: nr.op("_ffn"), n, reuse=True)
    res["enabled, no profiler: step(batch_size, tokens)"] = per_range_ns(
        lambda: nr.step(batch_size=8, tokens=8), n
    )
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile, record_function
    except ImportError:
        torch = None
    if torch is not None:
        m = max(n // 10, 1000)  # the profiler keeps every event in memory
        res["bare record_function, no profiler"] = per_range_ns(lambda: record_function("_ffn"), n)
        with profile(activities=[ProfilerActivity.CPU]):
            res["enabled, torch.profiler on: op('_ffn')"] = per_range_ns(lambda: nr.op("_ffn"), m)
        with profile(activities=[ProfilerActivity.CPU]):
            res["bare record_function, torch.profiler on"] = per_range_ns(
                lambda: record_function("_ffn"), m
            )
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True):
            res["enabled, torch.profiler on: step(batch_size, tokens)"] = per_range_ns(
                lambda: nr.step(batch_size=8, tokens=8), m
            )
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "nvtx_backend": nr.NVTX_BACKEND,
        "torch": getattr(torch, "__version__", None) if torch is not None else None,
    }
    if a.json:
        print(json.dumps({"ns_per_range": res, **meta}, indent=1))
    else:
        print(f"# ns per range (enter+exit), best of 5; {meta}")
        for k, v in res.items():
            print(f"{v:10.0f}  {k}")


if __name__ == "__main__":
    main()
