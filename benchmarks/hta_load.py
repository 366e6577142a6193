"""The HTA side of the Kineto benchmark: load a trace folder the way HTA users do.

Runs inside benchmarks/.venv-hta (HolisticTraceAnalysis and its own pins), as a
child of benchmarks/run.py, which measures its wall time and peak memory.  Prints
one JSON line: seconds inside ``TraceAnalysis(trace_dir=...)`` and the events it
loaded.

Example:
    benchmarks/.venv-hta/bin/python benchmarks/hta_load.py benchmarks/data/hta_54mb
"""

from __future__ import annotations

import json
import logging
import sys
import time


def main() -> None:
    trace_dir = sys.argv[1]
    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    from hta.trace_analysis import TraceAnalysis

    t1 = time.perf_counter()
    analyzer = TraceAnalysis(trace_dir=trace_dir)
    t2 = time.perf_counter()
    traces = analyzer.t.traces
    events = sum(len(df) for df in traces.values())
    print(
        json.dumps(
            {
                "import_s": round(t1 - t0, 3),
                "load_s": round(t2 - t1, 3),
                "ranks": sorted(int(r) for r in traces),
                "events": events,
            }
        )
    )


if __name__ == "__main__":
    main()
