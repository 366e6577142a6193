"""Build a large multi-rank Kineto (torch.profiler) input by replicating real traces.

Each output rank file is a valid Kineto JSON trace: the source's events repeated
``copies`` times back to back, every copy shifted so that nothing collides:

- timestamps (``ts``) by a whole source span plus a gap, so copies follow each other;
- ``correlation``, ``External id``, flow ``id`` (ac2g), ``Ev Idx``, ``Python id`` /
  ``Python parent id`` and ``Sequence number`` by the source's largest id + 1, so
  a kernel still links to its own launch and to nothing else;
- per rank: CPU pids become ``pid + rank`` and the GPU (pid = device index) becomes
  device ``rank``; ``distributedInfo`` says ``rank`` and ``world_size``.

Metadata events (``ph: M``) and the profiler's own span events appear once per
file; the ``Trace`` span is stretched over all copies.  Output is uncompressed JSON
(both tools read it; the MB/s figures are over these bytes).

Example:
    python benchmarks/make_kineto.py --ranks 8 --size-mb 1024 -o benchmarks/data/kineto_1gb \\
        /work/shared/traces/kineto/hta/df_index_resolver_54MB.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ID_ARGS = (
    "correlation",
    "External id",
    "Ev Idx",
    "Python id",
    "Python parent id",
    "Sequence number",
)
DEVICE_PIDS = 1000  # Kineto writes GPU rows with pid = device index
GPU_CATS = {
    "kernel",
    "gpu_memcpy",
    "gpu_memset",
    "gpu_user_annotation",
    "Kernel",
    "Memcpy",
    "Memset",
}


def load(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        return dict(json.load(fh))


def _is_span(e: dict[str, Any]) -> bool:
    """The profiler's own bookkeeping rows (string pids such as "Spans", "Traces")."""
    return not isinstance(e.get("pid"), int)


def plan(src: dict[str, Any]) -> tuple[float, int, set[int]]:
    """(time shift per copy in us, id shift per copy, GPU pids) of a source trace."""
    lo, hi, top = float("inf"), float("-inf"), 0
    gpu_pids: set[int] = set()
    for e in src["traceEvents"]:
        if e.get("ph") == "M" or _is_span(e):
            continue
        ts = e.get("ts")
        if isinstance(ts, int | float):
            lo = min(lo, ts)
            hi = max(hi, ts + (e.get("dur") or 0))
        if isinstance(e.get("id"), int):
            top = max(top, e["id"])
        args = e.get("args") or {}
        for k in ID_ARGS:
            v = args.get(k)
            if isinstance(v, int):
                top = max(top, v)
        if e.get("cat") in GPU_CATS:
            gpu_pids.add(e["pid"])
    span = (hi - lo) if hi > lo else 1.0
    # Round to whole ms so shifted integer timestamps stay integers; 1 ms gap.
    shift = float(int(span / 1000.0 + 2) * 1000)
    return shift, top + 1, gpu_pids


def events(src: dict[str, Any], rank: int, copies: int) -> Iterator[dict[str, Any]]:
    """All events of one rank file, in file order: metadata once, then the copies."""
    shift, id_shift, gpu_pids = plan(src)
    gpu_map = {p: rank * len(gpu_pids) + i for i, p in enumerate(sorted(gpu_pids))}

    def pid_of(p: Any) -> Any:
        if not isinstance(p, int):
            return p
        if p in gpu_map:
            return gpu_map[p]
        return p if p < DEVICE_PIDS else p + rank  # other devices' rows keep their pid

    evs = src["traceEvents"]
    for e in evs:
        if e.get("ph") == "M" or _is_span(e):
            p = e.get("pid")
            if isinstance(p, int) and p not in gpu_map and p in gpu_map.values():
                continue  # the source's row for the device this rank now uses
            o = dict(e)
            o["pid"] = pid_of(e.get("pid"))
            if o.get("cat") == "Trace" and isinstance(o.get("dur"), int | float):
                o["dur"] = o["dur"] + shift * (copies - 1)
            yield o
    for c in range(copies):
        dt, di = shift * c, id_shift * c
        int_dt = int(dt)
        for e in evs:
            if e.get("ph") == "M" or _is_span(e):
                continue
            o = dict(e)
            o["pid"] = pid_of(e.get("pid"))
            ts = e.get("ts")
            if isinstance(ts, int):
                o["ts"] = ts + int_dt
            elif isinstance(ts, float):
                o["ts"] = ts + dt
            if c and isinstance(e.get("id"), int):
                o["id"] = e["id"] + di
            args = e.get("args")
            if args:
                a = dict(args)
                if "device" in a and isinstance(a["device"], int) and e.get("pid") in gpu_map:
                    a["device"] = gpu_map[e["pid"]]
                if c:
                    for k in ID_ARGS:
                        v = a.get(k)
                        if isinstance(v, int) and v >= 0:
                            a[k] = v + di
                o["args"] = a
            yield o


def write_rank(src: dict[str, Any], rank: int, world: int, copies: int, out: Path) -> int:
    """Write one rank file; return its size in bytes."""
    head = {k: v for k, v in src.items() if k != "traceEvents"}
    dist = dict(head.get("distributedInfo") or {"backend": "nccl"})
    dist.update(rank=rank, world_size=world)
    head["distributedInfo"] = dist
    head["traceName"] = str(out)
    # Kineto's own layout: "key": value with a space (HTA finds the rank with the
    # regex '"rank":\\s+(\\d+)', line by line) and one event per line.
    enc = json.JSONEncoder()
    with open(out, "w") as fh:
        fh.write(enc.encode(head)[:-1] + ',\n  "traceEvents": [\n')
        first = True
        buf: list[str] = []
        for e in events(src, rank, copies):
            buf.append(enc.encode(e))
            if len(buf) >= 50_000:
                fh.write(("" if first else ",\n") + ",\n".join(buf))
                first, buf = False, []
        if buf:
            fh.write(("" if first else ",\n") + ",\n".join(buf))
        fh.write("\n]}\n")
    return out.stat().st_size


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "sources",
        nargs="+",
        type=Path,
        help="real Kineto traces; rank r replicates sources[r %% n]",
    )
    ap.add_argument("-o", "--out", type=Path, required=True, help="output folder (created)")
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument(
        "--size-mb", type=float, default=1024.0, help="total size of all rank files (uncompressed)"
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    srcs = [load(p) for p in args.sources]
    sizes = [p.stat().st_size if not p.name.endswith(".gz") else None for p in args.sources]
    total = 0
    t0 = time.perf_counter()
    for r in range(args.ranks):
        i = r % len(srcs)
        src = srcs[i]
        if sizes[i] is None:  # measure one copy's encoded size once
            sizes[i] = len(json.dumps(src))
        copies = max(1, round(args.size_mb * 1e6 / args.ranks / sizes[i]))
        total += write_rank(src, r, args.ranks, copies, args.out / f"rank{r}.pt.trace.json")
        print(f"rank {r}: {copies} copies of {args.sources[i].name}", flush=True)
    print(
        f"wrote {args.ranks} files, {total / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s to {args.out}"
    )


if __name__ == "__main__":
    main()
