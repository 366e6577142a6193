"""Reader for PyTorch profiler (Kineto) JSON traces: ``.json``, ``.json.gz``, ``.pt.trace.json(.gz)``.

One file is one process's trace (usually one rank).  The JSON is parsed by DuckDB's
bundled JSON reader straight into columns (no Python object per event), and every
mapping below is one SQL statement over those columns.

Formats handled:

- current Kineto (2022+): categories ``kernel``, ``gpu_memcpy``, ``gpu_memset``,
  ``cuda_runtime``, ``cuda_driver``, ``cuda_sync``, ``user_annotation``,
  ``gpu_user_annotation``, ``cpu_op``, ``python_function``; ROCm traces use the same
  categories with HIP API names (``hipLaunchKernel``, ``hipGraphLaunch``);
- the 2021 format: ``Operator``, ``Runtime``, ``Kernel``, ``Memcpy``, ``Memset``,
  GPU rows with ``tid`` = ``"stream 7"`` and lower-case ``external id``.

Raw category to ``kind``: kernel, memcpy, memset, runtime (CUDA/HIP runtime and
driver calls), sync (``cuda_sync``), range (``user_annotation``: record_function,
nested on its thread; ``gpu_user_annotation``: the GPU-side copy, ``nested`` False;
2021 ``ProfilerStep#N``), cpu_op (``cpu_op``/``Operator``).  ``python_function``
events are dropped (they are often 90 % of a trace and attribution does not use
them), except ``nn.Module: <Class>_<i>`` frames, which are kept as ranges in domain
``nn.Module`` because they are the only layer/module structure that serving
frameworks' traces record.

Times: Kineto writes microseconds as JSON numbers.  Each instant is rounded to
integer ns on its own, ``start = R(ts)`` and ``end = R(ts + dur)``, with ``R``
monotone and the integer microseconds kept apart from the fraction, so two
intervals that did not overlap in the file do not overlap after conversion (taking
``R(ts) + R(dur)`` can create 1 ns overlaps, which HTA warns about).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.errors import TracekitError
from tracekit.readers import RawTrace
from tracekit.readers.kineto_load import (
    _EXACT_LIMIT_US,
    _VERSION_KEYS,
    PAYLOAD_PREFIX,
    _PandasImport,
    close,
    load,
)


def read(path: Path) -> RawTrace:
    """Read one Kineto JSON trace into the raw events table and its metadata.

    >>> raw = read(Path("rank0.pt.trace.json.gz"))  # doctest: +SKIP
    >>> raw.meta["rank"], raw.table.num_rows  # doctest: +SKIP
    (0, 123456)
    """
    path = Path(path)
    warm = _PandasImport()
    try:
        con, header = load(path, warm.start)
    finally:
        # Before anything here imports again (the thread holds import locks).
        warm.join()
    try:
        table, stats = _events(con)
    finally:
        close(con)
    meta = _meta(path, header, stats)
    rank_col = _rank_column(table, meta)
    table = table.append_column("rank", rank_col)
    return RawTrace(table=table, meta=meta)
def check_ranks(metas: list[dict[str, Any]]) -> None:
    """Refuse a set of per-file metadata that cannot be one run.

    Two files that claim the same explicit rank, or that record different world
    sizes, raise :class:`TracekitError`.

    >>> check_ranks([{"source": "a", "rank": 0, "rank_source": "explicit", "world_size": 2},
    ...              {"source": "b", "rank": 1, "rank_source": "explicit", "world_size": 2}])
    """
    worlds: dict[int, str] = {}
    for m in metas:
        ws = m.get("world_size")
        if ws is not None:
            worlds.setdefault(int(ws), str(m.get("source")))
    if len(worlds) > 1:
        parts = ", ".join(f"{src} says {ws}" for ws, src in sorted(worlds.items()))
        raise TracekitError(
            f"The input files come from different runs (world sizes differ: {parts}); "
            "ingest the ranks of one run together."
        )
    seen: dict[int, str] = {}
    for m in metas:
        if m.get("rank_source") != "explicit" or m.get("rank") is None:
            continue
        rank, src = int(m["rank"]), str(m.get("source"))
        if rank in seen:
            raise TracekitError(
                f"{seen[rank]} and {src} both claim rank {rank}; "
                "ingest the ranks of one run, each once."
            )
        seen[rank] = src


# --- loading ---------------------------------------------------------------------


def _events(con: duckdb.DuckDBPyConnection) -> tuple[pa.Table, dict[str, Any]]:
    # The output events are ev's X rows; rowid numbers them for the payload join.
    # Rows come out in file order (one thread, joins probe x in scan order); nothing
    # downstream depends on row order, and sorting cost a third of the last query.
    con.execute("CREATE TEMP VIEW x AS SELECT rowid AS rid, * FROM ev WHERE ph = 'X'")
    stats: dict[str, Any] = {"warnings": []}
    missing, n_gpu, max_ts, format_2021, hip, markers = con.execute(
        f"""
        SELECT count(*) FILTER (is_gpu AND kind <> 'range' AND correlation IS NULL),
               count(*) FILTER (is_gpu AND kind <> 'range'),
               max(abs(ts)) FILTER (ts <> floor(ts)),
               count(*) FILTER (is_2021),
               count(*) FILTER (kind = 'runtime' AND starts_with(name, 'hip')),
               count(*) FILTER (kind IN ('range', 'cpu_op') AND NOT is_gpu
                                AND starts_with(name, '{PAYLOAD_PREFIX}'))
        FROM x
        """
    ).fetchall()[0]
    # Correlation through the flow arrow where a GPU activity's args lack it.
    if missing:
        con.execute(
            """
            UPDATE ev SET correlation = f.id FROM (
              SELECT rpid AS p, rtid AS t, start_ns AS s, min(fid) AS id
              FROM ev WHERE ph = 'f' GROUP BY ALL
            ) f
            WHERE ev.ph = 'X' AND ev.is_gpu AND ev.correlation IS NULL AND ev.rpid = f.p
              AND ev.rtid = f.t AND ev.start_ns = f.s
            """
        )
    procs = con.execute(
        "SELECT rpid, any_value(aname) FROM ev WHERE ph = 'M' GROUP BY rpid"
    ).fetchall()
    proc_names = {int(p): n for p, n in procs if p is not None}

    # The process that launched the GPU work: by correlation, else the main process.
    main_pid = _scalar(
        con,
        "SELECT rpid FROM x WHERE NOT is_gpu AND rpid IS NOT NULL "
        "GROUP BY rpid ORDER BY count(*) FILTER (kind = 'runtime') DESC, count(*) DESC, rpid LIMIT 1",
    )
    unmatched = _scalar(
        con,
        "SELECT count(*) FROM x WHERE is_gpu AND kind <> 'range' AND correlation NOT IN "
        "(SELECT correlation FROM x WHERE kind = 'runtime' AND correlation IS NOT NULL)",
    )
    if unmatched:
        stats["warnings"].append(
            f"{unmatched} of {n_gpu} GPU activities have no launching runtime call in the trace "
            "(launched before the profiling window or not traced); they keep their correlation "
            "but have no launch to attribute through."
        )
    if max_ts is not None and max_ts >= _EXACT_LIMIT_US:
        ulp_ns = 1000 * 2.0 ** (math.floor(math.log2(max_ts)) - 52)
        stats["warnings"].append(
            f"Timestamps are large microsecond floats (up to {max_ts:.4g} us), so their sub-microsecond "
            f"digits carry only float64 precision (about {ulp_ns:.3g} ns)."
        )

    payload = _payload_sql(con) if markers else "NULL"
    table = con.sql(
        f"""
        WITH launch AS (
          SELECT correlation, min(rpid) AS lpid FROM x
          WHERE kind = 'runtime' AND correlation IS NOT NULL GROUP BY correlation
        )
        SELECT
          CAST(CASE WHEN x.is_gpu THEN coalesce(l.lpid, $main, x.rpid) ELSE x.rpid END AS BIGINT) AS pid,
          CAST(CASE WHEN x.is_gpu THEN NULL ELSE x.rtid END AS BIGINT) AS tid,
          CAST(CASE WHEN x.is_gpu THEN coalesce(x.dev, CAST(x.rpid AS INTEGER)) END AS INTEGER) AS device,
          CAST(CASE WHEN x.is_gpu THEN coalesce(x.strm, x.rtid) END AS BIGINT) AS stream,
          x.kind, x.name, x.start_ns, x.end_ns,
          CASE WHEN x.kind IN ('kernel', 'memcpy', 'memset', 'sync', 'runtime') THEN x.correlation END
            AS correlation,
          CASE WHEN x.kind IN ('memcpy', 'memset', 'kernel') THEN x.nbytes END AS bytes,
          CASE WHEN x.kind = 'range' THEN NOT x.is_gpu END AS nested,
          CASE WHEN x.kind = 'range' AND x.is_module THEN 'nn.Module' END AS domain,
          {payload} AS payload
        FROM x
        LEFT JOIN launch l ON x.is_gpu AND l.correlation = x.correlation
        {"LEFT JOIN pl ON pl.rid = x.rid" if payload != "NULL" else ""}
        WHERE NOT (x.kind IN ('range', 'cpu_op') AND starts_with(x.name, '{PAYLOAD_PREFIX}'))
          AND (x.is_gpu OR x.rpid IS NOT NULL)
        """,
        params={"main": main_pid},
    ).to_arrow_table()
    stats["main_pid"] = main_pid
    stats["process_names"] = proc_names
    stats["format_2021"] = bool(format_2021)
    stats["hip"] = bool(hip)
    return _typed(table), stats


def _payload_sql(con: duckdb.DuckDBPyConnection) -> str:
    """Attach nvtx_ranges payload markers to the innermost range open at the marker.

    Builds temp table ``pl(rid, payload)`` and returns the SQL expression for the
    payload column (called only when the trace has markers).
    """
    con.execute(
        rf"""
        CREATE TEMP TABLE pl AS
        WITH m AS (
          SELECT rid, rpid, rtid, start_ns, end_ns,
                 string_split(substr(name, {len(PAYLOAD_PREFIX) + 1}), ',') AS kv
          FROM x WHERE kind IN ('range', 'cpu_op') AND NOT is_gpu
            AND starts_with(name, '{PAYLOAD_PREFIX}')
        ), r AS (
          SELECT rid, rpid, rtid, start_ns, end_ns FROM x
          WHERE kind = 'range' AND NOT is_gpu AND NOT starts_with(name, '{PAYLOAD_PREFIX}')
        ), hit AS (
          SELECT m.rid AS mid, arg_max(r.rid, [r.start_ns, -r.end_ns]) AS rid,
                 any_value(m.kv) AS kv
          FROM m JOIN r ON m.rpid = r.rpid AND m.rtid = r.rtid
                 AND r.start_ns <= m.start_ns AND r.end_ns >= m.end_ns
          GROUP BY m.rid
        )
        SELECT rid, '{{' || array_to_string(list_transform(kv, lambda p:
                 to_json(split_part(p, '=', 1))::VARCHAR || ': ' ||
                 CASE WHEN regexp_full_match(substr(p, strpos(p, '=') + 1),
                                             '-?\d+(\.\d+)?([eE][-+]?\d+)?')
                      THEN substr(p, strpos(p, '=') + 1)
                      ELSE to_json(substr(p, strpos(p, '=') + 1))::VARCHAR END), ', ') || '}}'
               AS payload
        FROM hit
        """
    )
    return "pl.payload"


def _typed(table: pa.Table) -> pa.Table:
    types = {
        "pid": pa.int64(),
        "tid": pa.int64(),
        "device": pa.int32(),
        "stream": pa.int64(),
        "kind": pa.string(),
        "name": pa.string(),
        "start_ns": pa.int64(),
        "end_ns": pa.int64(),
        "correlation": pa.int64(),
        "bytes": pa.int64(),
        "nested": pa.bool_(),
        "domain": pa.string(),
        "payload": pa.string(),
    }
    cols = []
    for name, typ in types.items():
        col = table.column(name)
        cols.append(col if col.type == typ else col.cast(typ))
    return pa.Table.from_arrays(cols, names=list(types))


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    rows = con.execute(sql).fetchall()
    return rows[0][0] if rows else None


# --- metadata --------------------------------------------------------------------


def _meta(path: Path, header: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    dist = header.get("distributedInfo")
    dist = dist if isinstance(dist, dict) else {}
    rank = dist.get("rank")
    world = dist.get("world_size")
    gpus: dict[str, str] = {}
    props = header.get("deviceProperties")
    if isinstance(props, list):
        for p in props:
            if isinstance(p, dict) and p.get("name") and p.get("id") is not None:
                gpus[str(p["id"])] = str(p["name"])
    versions = {k: header[k] for k in _VERSION_KEYS if header.get(k) is not None}
    schema_version = header.get("schemaVersion")
    version = f"schemaVersion {schema_version}" if schema_version is not None else "unknown"
    if versions:
        version += " (" + ", ".join(f"{k} {v}" for k, v in versions.items()) + ")"
    return {
        "format": "kineto-2021" if stats["format_2021"] else "kineto",
        "profiler": "torch.profiler",
        "profiler_version": version,
        "source": str(path),
        "gpus": gpus,
        "rank": int(rank) if isinstance(rank, int) else None,
        "rank_source": "explicit" if isinstance(rank, int) else "order",
        "world_size": int(world) if isinstance(world, int) else None,
        "distributed_backend": dist.get("backend"),
        "gpu_runtime": "hip" if stats["hip"] else "cuda",
        "base_time_ns": header.get("baseTimeNanoseconds"),
        "trace_id": header.get("trace_id"),
        "display_time_unit": header.get("displayTimeUnit"),
        "processes": [],  # filled by _rank_column
        "warnings": list(stats["warnings"]),
        "_process_names": stats["process_names"],
    }


def _rank_column(table: pa.Table, meta: dict[str, Any]) -> pa.ChunkedArray:
    """Rank per row; fills ``meta['processes']``.

    An explicit ``distributedInfo.rank`` applies to every process in the file (a
    Kineto file is one rank's trace); otherwise processes are numbered by their
    first (lowest) GPU, CPU-only processes after them.
    """
    names: dict[int, str] = meta.pop("_process_names")
    # A file holds one or a few processes: a loop over processes, not events (and no
    # Arrow group_by, whose import alone costs half a second).
    pid_col, dev_col = table.column("pid"), table.column("device")
    first_gpu = []
    for p in pc.unique(pid_col.drop_null()).to_pylist():
        d = pc.min(pc.filter(dev_col, pc.equal(pid_col, p))).as_py()
        first_gpu.append((d is None, d if d is not None else 0, int(p)))
    order = {p: i for i, (_, _, p) in enumerate(sorted(first_gpu))}
    explicit = meta["rank"]
    ranks = {p: (explicit if explicit is not None else i) for p, i in order.items()}
    meta["processes"] = [{"pid": p, "rank": ranks[p], "name": names.get(p)} for p in order]
    if explicit is None and ranks:
        meta["rank"] = min(ranks.values())
    pids = pa.array(list(ranks), pa.int64())
    values = pa.array(list(ranks.values()), pa.int32())
    idx = pc.index_in(table.column("pid"), value_set=pids)
    return pc.take(values, idx)
