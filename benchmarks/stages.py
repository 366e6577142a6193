"""Where one ``tracekit ingest`` spends its time: a per-stage timeline.

Runs the console script's ingest in this process with the main stages wrapped,
and prints, per stage, calls, wall seconds (summed over calls) and the CPU time
of the calling thread (``time.thread_time``: DuckDB's own worker threads are not
in it), then the process's total user + system CPU and what the imports took.
For finding what to speed up, not for the figures in README (``run.py`` is).  Each
module is wrapped as it is imported (an import hook), so the imports happen when
they would without this script.

Example:
    .venv/bin/python benchmarks/stages.py examples/traces/h200_tp4/torch -o /tmp/x.parquet
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import sys
import threading
import time
from collections import defaultdict
from typing import Any

T0 = time.perf_counter()
CPU0 = os.times()

_STAGES = [  # (module, class or "", function)
    ("tracekit.readers.kineto_load", "", "_copy_array"),
    ("tracekit.readers.kineto_load", "_PartParser", "_parse"),
    ("tracekit.readers.kineto_load", "_PartParser", "finish"),
    ("tracekit.readers.kineto_load", "", "_load"),
    ("tracekit.readers.kineto", "", "_events"),
    ("tracekit.readers.kineto", "", "_rank_column"),
    ("tracekit.readers.kineto", "", "read"),
    ("tracekit.ingest", "", "_trim"),
    ("tracekit.ingest", "", "choose"),
    ("tracekit.ingest", "", "_classes"),
    ("tracekit.ingest", "", "attribute"),
    ("tracekit.ingest", "", "busy_columns"),
    ("tracekit.ingest", "", "exposed_column"),
    ("tracekit.ingest", "", "launch_first_column"),
    ("tracekit.ingest", "", "conform"),
    ("tracekit.ingest", "RunWriter", "write"),
    ("tracekit.ingest", "RunWriter", "close"),
    ("tracekit.ingest", "", "process_file"),
]

_log: list[tuple[str, str, float, float, float]] = []  # stage, thread, start, wall, cpu
_lock = threading.Lock()


def _wrap(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                _log.append(
                    (label, threading.current_thread().name, t - T0, time.perf_counter() - t,
                     time.thread_time() - c)
                )

    setattr(owner, name, timed)


class _Hook:
    """Wraps the stages of a module right after the module is executed."""

    def __init__(self) -> None:
        self.modules = {m for m, _, _ in _STAGES}

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.modules:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _log.append(("import " + name, threading.current_thread().name, time.perf_counter() - T0, 0.0, 0.0))
            for mod, cls, fn in _STAGES:
                if mod == name:
                    owner = getattr(module, cls) if cls else module
                    _wrap(owner, fn, f"{cls or mod.rsplit('.', 1)[-1]}.{fn}")

        spec.loader.exec_module = exec_module
        return spec


def main() -> None:
    sys.meta_path.insert(0, _Hook())
    from tracekit import cli

    sys.argv = ["tracekit", "ingest", *sys.argv[1:]]
    # What cli.main() sets up (main itself ends with os._exit).
    cli._console_script = True
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    gc.disable()
    t_run = time.perf_counter()
    with contextlib.suppress(SystemExit):
        cli.app()
    end = time.perf_counter()
    cpu = os.times()
    total: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for label, _th, _s, wall, c in _log:
        total[label][0] += 1
        total[label][1] += wall
        total[label][2] += c
    print(f"\n{'stage':40s} {'calls':>5s} {'wall s':>8s} {'thread cpu s':>12s}", file=sys.stderr)
    for label, (n, wall, c) in total.items():
        print(f"{label:40s} {n:5d} {wall:8.3f} {c:12.3f}", file=sys.stderr)
    print("\ntimeline (start s, wall s, thread):", file=sys.stderr)
    for label, th, s, wall, _c in sorted(_log, key=lambda r: r[2]):
        print(f"  {s:6.3f} {wall:6.3f} {th:24s} {label}", file=sys.stderr)
    print(
        f"\nprocess: wall {end - T0:.3f} s (ingest command {end - t_run:.3f} s), CPU user "
        f"{cpu.user - CPU0.user:.2f} s + sys {cpu.system - CPU0.system:.2f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
