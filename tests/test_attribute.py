"""Attribution checked against an independent oracle: a plain SQL range join on the
source Nsight SQLite (kernel -> runtime call by correlation -> NVTX push/pop ranges
open on the launching thread at the launch instant), computed in DuckDB from the
raw tables, never through tracekit's code."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from tracekit.ingest import ingest

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "nsys"
CASES = ["mfu_2gpu_before.sqlite", "h100_2gpu_1s.sqlite", "fuser-2025.1/report1.sqlite"]


def _raw(path: Path, sql: str) -> pd.DataFrame:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return pd.read_sql_query(sql, con)
    finally:
        con.close()


def oracle(path: Path) -> pd.DataFrame:
    """Per kernel: innermost push/pop range text open at launch, and how many are open."""
    kernels = _raw(
        path,
        "select start, deviceId, streamId, correlationId, globalPid >> 24 as gp "
        "from CUPTI_ACTIVITY_KIND_KERNEL",
    )
    runtime = _raw(
        path,
        "select start as rs, correlationId, globalTid as gt, globalTid >> 24 as gp "
        "from CUPTI_ACTIVITY_KIND_RUNTIME where correlationId is not null",
    )
    cols = {r[1] for r in sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("pragma table_info(NVTX_EVENTS)")}
    text = "coalesce(e.text, s.value)" if "textId" in cols else "e.text"
    join = "left join StringIds s on s.id = e.textId" if "textId" in cols else ""
    ranges = _raw(
        path,
        f"select e.start as s, e.end as e, e.globalTid as gt, {text} as txt from NVTX_EVENTS e {join} "
        "where e.eventType = 59 and e.end is not null and e.end > e.start",
    )
    con = duckdb.connect()
    con.register("k", kernels)
    con.register("r", runtime)
    con.register("n", ranges)
    return con.sql(
        """
        with launch as (
            select k.start, k.deviceId, k.streamId, r.rs, r.gt
            from k join r on k.correlationId = r.correlationId and k.gp = r.gp
        ), enclosing as (
            select l.start, l.deviceId, l.streamId, n.s, n.e, n.txt
            from launch l join n on n.gt = l.gt and n.s <= l.rs and l.rs < n.e
        )
        select start, deviceId as device, streamId as stream, count(*) as open_ranges,
               first(txt order by s desc, e asc) as innermost
        from enclosing group by all
        """
    ).df()


@pytest.mark.parametrize("case", CASES)
def test_path_matches_range_join_oracle(case: str, tmp_path: Path) -> None:
    src = TRACES / case
    if not src.exists():
        pytest.skip(f"{src} not present")
    out = tmp_path / "run.parquet"
    ingest([src], out, jobs=1)
    got = duckdb.sql(
        f"select start_ns as start, device, stream, path from '{out}' where kind = 'kernel'"
    ).df()
    want = oracle(src)
    assert len(want) > 0
    merged = want.merge(got, on=["start", "device", "stream"], how="left", validate="1:1")
    assert merged["path"].notna().all(), "every kernel with an open range at launch has a path"
    depth = merged["path"].str.count("/") + 1
    assert (depth == merged["open_ranges"]).all()
    leaf = merged["path"].str.rsplit("/", n=1).str[-1]
    # tracekit drops PyTorch's ", seq = N, op_id = M" counters from the leaf.
    assert all(txt.startswith(lf) for txt, lf in zip(merged["innermost"], leaf, strict=True))
    # Kernels launched with no range open have no path in tracekit either.
    n_kernels = _raw(src, "select count(*) as n from CUPTI_ACTIVITY_KIND_KERNEL")["n"][0]
    n_with_path = duckdb.sql(f"select count(path) from '{out}' where kind = 'kernel'").fetchall()[0][0]
    assert n_with_path == len(want) <= n_kernels


@pytest.mark.parametrize(
    ("n", "largest"),
    [(3000, 4_000_000), (3000, 5000), (200_000, 3_000_000), (50, 1 << 40), (1, 0)],
)
def test_dense_codes_equal_numpy_unique(n: int, largest: int) -> None:
    """Both ways of coding ids (lookup table for dense small ids, hashing for sparse
    or large ones) give numpy.unique's sorted values and inverse."""
    import numpy as np

    from tracekit.attribute import dense_codes

    values = np.random.default_rng(n).integers(0, largest + 1, n)
    uniq, codes = dense_codes(values)
    want_uniq, want_codes = np.unique(values, return_inverse=True)
    assert np.array_equal(uniq, want_uniq) and np.array_equal(codes, want_codes)


def test_classes_made_beside_attribution_stay_on_their_rows() -> None:
    """Ingest classifies a table while it is attributed (two threads); attribution
    drops payload marker rows, and the classes must be dropped with them, not shift
    onto the next row.  Expected by hand: a cuBLAS GEMM and an NCCL all-reduce, the
    marker's payload on the range around it, every other row its own short name."""
    from tracekit.ingest import _attributed
    from tracekit.phasemap import choose

    gemm = "ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_tn"
    nccl = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)"
    rows = [  # kind, name, tid, device, start, end, correlation, nested
        ("range", "decode", 1, None, 0, 100, None, True),
        ("range", "tracekit.payload:batch_size=4,tokens=4", 1, None, 10, 10, None, True),
        ("runtime", "cudaLaunchKernel", 1, None, 20, 25, 5, None),
        ("kernel", gemm, None, 0, 30, 40, 5, None),
        ("runtime", "cudaLaunchKernel", 1, None, 45, 46, 6, None),
        ("kernel", nccl, None, 0, 50, 60, 6, None),
    ]
    kind, name, tid, device, start, end, corr, nested = map(list, zip(*rows, strict=True))
    table = pa.table(
        {
            "kind": pa.array(kind, pa.string()),
            "name": pa.array(name, pa.string()),
            "pid": pa.array([1] * len(rows), pa.int64()),
            "tid": pa.array(tid, pa.int64()),
            "device": pa.array(device, pa.int32()),
            "start_ns": pa.array(start, pa.int64()),
            "end_ns": pa.array(end, pa.int64()),
            "correlation": pa.array(corr, pa.int64()),
            "nested": pa.array(nested, pa.bool_()),
        }
    )
    out = _attributed(table, choose("tracekit", ["decode"]), None).table
    got = out.select(["name", "category", "short_name", "payload"]).to_pylist()
    assert got == [
        {"name": "decode", "category": None, "short_name": "decode",
         "payload": '{"batch_size": 4, "tokens": 4}'},
        {"name": "cudaLaunchKernel", "category": None, "short_name": "cudaLaunchKernel", "payload": None},
        {"name": gemm, "category": "gemm", "short_name": gemm, "payload": None},
        {"name": "cudaLaunchKernel", "category": None, "short_name": "cudaLaunchKernel", "payload": None},
        {"name": nccl, "category": "communication",
         "short_name": "ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "payload": None},
    ]  # fmt: skip
