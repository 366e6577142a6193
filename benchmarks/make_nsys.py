"""Build a large Nsight Systems SQLite export by replicating a real one inside SQLite.

The source export is copied, then its activity tables are repeated ``copies``
times with ``INSERT ... SELECT``: every copy shifted in time by the source's span
plus a gap, ``correlationId`` shifted by the largest id + 1 (so each kernel still
links to its own launch and to nothing else), NVTX start/end ``rangeId`` shifted
the same way.  String ids (``StringIds``), processes, threads, devices and streams
are kept, so the result is still a valid export of the same processes, just
longer.  NVTX domain-create rows are kept once.

Tables replicated: kernels, memcpy, memset, synchronization, CUDA runtime, NVTX
events.  Everything else (metadata, enums, target info) is left as is.

Example:
    python benchmarks/make_nsys.py /work/shared/traces/nsys/mfu_2gpu_before.sqlite \\
        -o benchmarks/data/nsys_5m.sqlite --kernels 5000000 --ranges 10000000
"""

from __future__ import annotations

import argparse
import math
import shutil
import sqlite3
import time
from pathlib import Path

TIMED = (
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
    "CUPTI_ACTIVITY_KIND_MEMSET",
    "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
    "CUPTI_ACTIVITY_KIND_RUNTIME",
    "NVTX_EVENTS",
)
NVTX_DOMAIN_CREATE = 75
NVTX_RANGES = (59, 60, 70, 71)  # push/pop and start/end, registered or not


def _tables(con: sqlite3.Connection) -> list[str]:
    have = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    return [t for t in TIMED if t in have]


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"pragma table_info({table})")]


def counts(path: Path) -> dict[str, int]:
    """Kernels and NVTX ranges (push/pop + start/end) in an export."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        k = con.execute("select count(*) from CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
        marks = ",".join(map(str, NVTX_RANGES))
        r = con.execute(f"select count(*) from NVTX_EVENTS where eventType in ({marks})").fetchone()[0]
    finally:
        con.close()
    return {"kernels": int(k), "ranges": int(r)}


def replicate(src: Path, out: Path, copies: int) -> None:
    """Write ``out``: ``src`` with its activity tables repeated ``copies`` times."""
    shutil.copyfile(src, out)
    out.chmod(0o644)
    con = sqlite3.connect(out)
    try:
        con.execute("pragma journal_mode=off")
        con.execute("pragma synchronous=off")
        con.execute("pragma cache_size=-262144")
        tables = _tables(con)
        lo = min(con.execute(f"select min(start) from {t}").fetchone()[0] or 0 for t in tables)
        hi = max(
            con.execute(f"select max(coalesce(end, start)) from {t}").fetchone()[0] or 0 for t in tables
        )
        top = 0
        for t in tables:
            cols = _columns(con, t)
            for c in ("correlationId", "rangeId"):
                if c in cols:
                    top = max(top, con.execute(f"select max({c}) from {t}").fetchone()[0] or 0)
        # Whole milliseconds plus a 1 ms gap between copies.
        dt = (math.ceil((hi - lo) / 1e6) + 1) * 1_000_000
        di = top + 1
        con.execute("create temp table copies(c integer primary key)")
        con.executemany("insert into copies values (?)", [(c,) for c in range(1, copies)])
        for t in tables:
            cols = _columns(con, t)
            shifted = {
                "start": "s.start + k.c * :dt",
                "end": "s.end + k.c * :dt",
                "correlationId": "s.correlationId + k.c * :di",
                "rangeId": "s.rangeId + k.c * :di",
            }
            exprs = ", ".join(shifted.get(c, f's."{c}"') for c in cols)
            where = ""
            if t == "NVTX_EVENTS":
                where = f"where s.eventType <> {NVTX_DOMAIN_CREATE}"
            quoted = ", ".join(f'"{c}"' for c in cols)
            # Snapshot the source rows first so the copies do not read themselves.
            con.execute(f"create temp table src as select * from {t}")
            con.execute(
                f"insert into {t} ({quoted}) select {exprs} from copies k cross join temp.src s "
                f"{where} order by k.c",
                {"dt": dt, "di": di},
            )
            con.execute("drop table temp.src")
            con.commit()
        con.execute(
            "insert into META_DATA_EXPORT(name, value) values "
            "('REPLICATED_BY', 'tracekit benchmarks/make_nsys.py: ' || ?)",
            (f"{copies} copies of {src.name}, shifted by {dt} ns and {di} correlation ids",),
        )
        con.commit()
    finally:
        con.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="a real Nsight Systems SQLite export")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--kernels", type=float, default=5e6, help="at least this many kernels")
    ap.add_argument("--ranges", type=float, default=1e7, help="at least this many NVTX ranges")
    args = ap.parse_args(argv)
    c = counts(args.source)
    copies = max(1, math.ceil(args.kernels / c["kernels"]), math.ceil(args.ranges / max(c["ranges"], 1)))
    t0 = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    replicate(args.source, args.out, copies)
    got = counts(args.out)
    print(
        f"wrote {args.out}: {copies} copies, {got['kernels']:,} kernels, {got['ranges']:,} NVTX ranges, "
        f"{args.out.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
