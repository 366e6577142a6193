"""Nsight Systems reader: ``.sqlite`` exports, and ``.nsys-rep``/``.qdrep`` reports
through ``nsys export --type sqlite``.

Exports differ across nsys versions (2021.5 to 2026.x): tables come and go
(``NVTX_EVENTS`` only when NVTX was traced, no kernel table when no kernel ran),
columns are added (``textId``, ``domainId``, ``graphId`` ...) and renamed
(``EXPORT_META_DATA`` became ``META_DATA_EXPORT``).  So every query is built from
``PRAGMA table_info``: a column the file lacks becomes NULL.

Speed: the benchmark feeds millions of kernels and NVTX ranges, and building one
Python tuple per row (``sqlite3``'s only interface) costs more than SQLite itself.
Each table is therefore read with one query whose columns are all non-NULL and of
one type (NULL becomes a sentinel in SQL and a mask in Arrow), so that the rows
either come straight into Arrow through the ADBC SQLite driver (when installed) or
into one NumPy matrix through ``sqlite3``.  Strings stored as ``StringIds`` ids are
decoded with one Arrow ``take`` against the ``StringIds`` table, not per row.

>>> from tracekit.readers.nsys import read
>>> trace = read(Path("report1.sqlite"))  # doctest: +SKIP
>>> trace.table.num_rows, trace.meta["world_size"]  # doctest: +SKIP
(16311, 1)
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.errors import TracekitError
from tracekit.readers import NSYS_REPORT_SUFFIXES, RawTrace
from tracekit.readers.nsys_meta import gpus_of, meta_value, ranks, session_env

#: NULL in a selected integer column comes back as this value and is masked out.
NULL_INT = -(2**63)
#: ``serialized GlobalId``: bits 24..47 are the OS pid, bits 0..23 the OS tid.
_ID_MASK = 0xFFFFFF

# NVTX event types (ENUM_NSYS_EVENT_TYPE).
NVTX_MARK = 34
PAYLOAD_MARKER = "tracekit.payload:"
NVTX_PUSH_POP = 59
NVTX_START_END = 60
NVTX_DOMAIN_CREATE = 75

KERNEL = "CUPTI_ACTIVITY_KIND_KERNEL"
MEMCPY = "CUPTI_ACTIVITY_KIND_MEMCPY"
MEMSET = "CUPTI_ACTIVITY_KIND_MEMSET"
SYNC = "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"
RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"
DRIVER = "CUPTI_ACTIVITY_KIND_DRIVER"
NVTX = "NVTX_EVENTS"
EVENT_TABLES = (KERNEL, MEMCPY, MEMSET, SYNC, RUNTIME, DRIVER, NVTX)
GPU_TABLES = (KERNEL, MEMCPY, MEMSET)


_EXPORT_WAY_OUT = (
    "export it where a recent Nsight Systems lives with `nsys export --type sqlite "
    "--output {stem}.sqlite {name}` and pass the .sqlite"
)

# Output columns of the raw table, in order, with their Arrow types.
_RAW_TYPES: dict[str, pa.DataType] = {
    "pid": pa.int64(),
    "tid": pa.int64(),
    "device": pa.int32(),
    "stream": pa.int64(),
    "kind": pa.string(),
    "name": pa.string(),
    "short_name": pa.string(),
    "start_ns": pa.int64(),
    "end_ns": pa.int64(),
    "correlation": pa.int64(),
    "domain": pa.string(),
    "payload": pa.string(),
    "graph_id": pa.int64(),
    "graph_node_id": pa.int64(),
    "bytes": pa.int64(),
    "nested": pa.bool_(),
}


def read(path: Path) -> RawTrace:
    """Read an Nsight Systems ``.sqlite`` export or ``.nsys-rep``/``.qdrep`` report.

    >>> read(Path("run.nsys-rep")).meta["profiler"]  # doctest: +SKIP
    'nsys'
    """
    path = Path(path)
    if not path.is_file():
        raise TracekitError(f"{path} does not exist or is not a file; check the path.")
    if path.name.lower().endswith(NSYS_REPORT_SUFFIXES):
        with tempfile.TemporaryDirectory(prefix="tracekit-nsys-") as tmp:
            db = _export(path, Path(tmp))
            return _read_sqlite(db, source=path, fmt="nsys-rep")
    return _read_sqlite(path, source=path, fmt="nsys-sqlite")


# --------------------------------------------------------------------------- export


def _export(report: Path, tmp: Path) -> Path:
    """Convert a report to SQLite with the installed nsys, into ``tmp``."""
    way_out = _EXPORT_WAY_OUT.format(stem=report.stem, name=report.name)
    nsys = os.environ.get("NSYS") or shutil.which("nsys")
    if not nsys:
        raise TracekitError(
            f"Cannot read {report.name}: the nsys command (Nsight Systems) is not installed "
            f"(put it on PATH or set NSYS to it), or {way_out}."
        )
    out = tmp / "export.sqlite"
    try:
        proc = subprocess.run(
            [
                nsys,
                "export",
                "--type",
                "sqlite",
                "--force-overwrite",
                "true",
                "--output",
                str(out),
                str(report),
            ],
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
    except OSError as exc:
        raise TracekitError(f"Cannot run nsys ({nsys}: {exc}); {way_out}.") from exc
    text = proc.stdout + proc.stderr
    # A refused report still leaves a stub .sqlite behind: judge by the tables.
    tables = _tables_or_none(out) if out.is_file() else None
    if proc.returncode != 0 or not tables or not (tables & set(EVENT_TABLES)):
        reason = _export_reason(text)
        raise TracekitError(
            f"The installed nsys ({nsys}) cannot export {report.name} ({reason}), most likely "
            f"because a newer Nsight Systems wrote it; {way_out}."
        )
    return out


def _export_reason(text: str) -> str:
    for pattern in (
        r"Version number is invalid[^\n]*",
        r"\w*Exception[^\n]*",
        r"[^\n]*[Ee]rror[^\n]*",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(0).strip().rstrip(".")[:200]
    return "no CUDA or NVTX tables in its export"


def _tables_or_none(db: Path) -> set[str] | None:
    try:
        with _connect(db) as conn:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError:
        return None


# --------------------------------------------------------------------------- querying


def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(_ro_uri(db), uri=True)


def _ro_uri(db: Path) -> str:
    return "file:" + urllib.parse.quote(str(db.resolve())) + "?mode=ro"


def _adbc_connect(db: Path) -> Any | None:
    """An ADBC SQLite connection (Arrow straight from C), or None if not installed."""
    try:
        import adbc_driver_sqlite.dbapi as adbc
    except ImportError:
        return None
    try:
        return adbc.connect(_ro_uri(db))
    except Exception:
        return None


class _Db:
    """One export, read-only: table/column introspection and columnar queries."""

    use_adbc = True  # tests switch this off to exercise the sqlite3 path

    def __init__(self, path: Path, warnings: list[str]):
        self.path = path
        self.warnings = warnings
        self.conn = _connect(path)
        self.adbc = _adbc_connect(path) if self.use_adbc else None
        self.tables = {
            r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        self._cols: dict[str, list[str]] = {}

    def close(self) -> None:
        if self.adbc is not None:
            self.adbc.close()
        self.conn.close()

    def cols(self, table: str) -> list[str]:
        if table not in self._cols:
            self._cols[table] = (
                [r[1] for r in self.conn.execute(f'PRAGMA table_info("{table}")')]
                if table in self.tables
                else []
            )
        return self._cols[table]

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Small queries (metadata): plain rows, undecodable text replaced."""
        try:
            return self.conn.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise
        self.conn.text_factory = lambda b: b.decode("utf-8", "replace")
        try:
            return self.conn.execute(sql).fetchall()
        finally:
            self.conn.text_factory = str

    def columns(
        self, table: str, ints: dict[str, str | None], strs: dict[str, str | None], where: str = ""
    ) -> dict[str, pa.Array]:
        """Select ``ints`` (name -> SQL expression or None) as int64 arrays with nulls and
        ``strs`` as string arrays ('' for NULL) from ``table``, in one query."""
        # Columns the file lacks are not selected: they become NULL arrays here.
        ints_sel = [n for n, e in ints.items() if e]
        strs_sel = [n for n, e in strs.items() if e]
        exprs = [f"COALESCE({ints[n]}, {NULL_INT})" for n in ints_sel]
        exprs += [f"COALESCE(CAST(({strs[n]}) AS TEXT), '')" for n in strs_sel]
        raw: dict[str, Any] | None = None
        if exprs:
            sql = f'SELECT {", ".join(exprs)} FROM "{table}" {where}'
            names = ints_sel + strs_sel
            if self.adbc is not None:
                try:
                    with self.adbc.cursor() as cur:
                        cur.execute(sql)
                        tab = cur.fetch_arrow_table()
                    raw = {n: tab.column(i) for i, n in enumerate(names)}
                except Exception:  # fall back to sqlite3, which reports real errors
                    raw = None
            if raw is None:
                raw = self._columns_sqlite3(sql, ints_sel, strs_sel)
            nrows = len(raw[names[0]])
        else:
            nrows = self.rows(f'SELECT count(*) FROM "{table}" {where}')[0][0]
        out: dict[str, pa.Array] = {}
        for n in ints:
            if n not in ints_sel or raw is None:
                out[n] = pa.nulls(nrows, pa.int64())
                continue
            col = raw[n]
            a = np.asarray(
                col.to_numpy() if isinstance(col, pa.ChunkedArray) else col, dtype=np.int64
            )
            out[n] = pa.array(a, pa.int64(), mask=a == NULL_INT)
        for n in strs:
            if n not in strs_sel or raw is None:
                out[n] = pa.repeat(pa.scalar("", pa.string()), nrows)
                continue
            col = raw[n]
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks() if col.num_chunks else pa.array([], pa.string())
            out[n] = col.cast(pa.string())
        return out

    def _columns_sqlite3(self, sql: str, ints: list[str], strs: list[str]) -> dict[str, Any]:
        rows = self.rows(sql)
        n = len(ints) + len(strs)
        if not strs:
            mat = np.array(rows, dtype=np.int64).reshape(len(rows), n)
            return {name: mat[:, i] for i, name in enumerate(ints)}
        obj = np.empty((len(rows), n), dtype=object)
        if rows:
            obj[:] = rows
        res: dict[str, Any] = {name: obj[:, i].astype(np.int64) for i, name in enumerate(ints)}
        for j, name in enumerate(strs):
            res[name] = pa.array(obj[:, len(ints) + j], pa.string())
        return res


class _Strings:
    """``StringIds`` as an Arrow dictionary: decode id arrays with one ``take``."""

    def __init__(self, db: _Db):
        if "StringIds" in db.tables:
            data = db.columns("StringIds", {"id": "id"}, {"value": "value"})
            ids = np.asarray(data["id"].fill_null(-1).to_numpy(zero_copy_only=False))
            values = data["value"]
        else:
            ids, values = np.zeros(0, np.int64), pa.array([], pa.string())
        ok = ids >= 0
        ids = ids[ok]
        self.values = values.filter(pa.array(ok)) if len(values) else values
        size = int(ids.max()) + 1 if len(ids) else 0
        self.pos = np.full(size, -1, dtype=np.int64)
        self.pos[ids] = np.arange(len(ids))

    def decode(self, ids: pa.Array) -> pa.Array:
        a = np.asarray(ids.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
        inside = (a >= 0) & (a < len(self.pos))
        idx = np.full(len(a), -1, dtype=np.int64)
        idx[inside] = self.pos[a[inside]]
        return self.values.take(pa.array(idx, pa.int64(), mask=idx < 0))


def _labels(db: _Db, enum_table: str, codes: pa.Array, prefix: str, default: str) -> pa.Array:
    """Decode an ENUM_* code column to ``prefix + label`` (small tables, one take)."""
    labels: dict[int, str] = {}
    if enum_table in db.tables and "label" in db.cols(enum_table):
        labels = {int(k): str(v) for k, v in db.rows(f'SELECT id, label FROM "{enum_table}"')}
    size = max([*labels, 0]) + 1
    names = [f"{prefix}{labels[i]}" if i in labels else default for i in range(size)] + [default]
    c = np.asarray(codes.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    c = np.where((c >= 0) & (c < size), c, size)
    return pa.array(names, pa.string()).take(pa.array(c))


def _col(db: _Db, table: str, name: str, expr: str | None = None) -> str | None:
    """SQL for column ``name`` of ``table`` (``expr`` may use it), or None if absent."""
    if name not in db.cols(table):
        return None
    return expr or f'"{name}"'


def _pid(global_id: pa.Array) -> pa.Array:
    return pc.bit_wise_and(pc.shift_right(global_id, 24), _ID_MASK)


def _tid(global_tid: pa.Array) -> pa.Array:
    return pc.bit_wise_and(global_tid, _ID_MASK)


# --------------------------------------------------------------------------- tables


def _gpu_part(db: _Db, strings: _Strings, table: str, kind: str) -> pa.Table | None:
    if table not in db.tables:
        return None
    c = lambda n: _col(db, table, n)  # noqa: E731
    ints = {
        "start_ns": c("start"),
        "end_ns": c("end"),
        "device": c("deviceId"),
        "stream": c("streamId"),
        "correlation": c("correlationId"),
        "global_pid": c("globalPid"),
        "graph_id": c("graphId"),
        "graph_node_id": c("graphNodeId"),
        "bytes": c("bytes"),
        "name_id": c("demangledName"),
        "short_id": c("shortName"),
        "code": c("copyKind") if kind == "memcpy" else c("syncType"),
    }
    d = db.columns(table, ints, {})
    if kind == "kernel":
        name, short = strings.decode(d["name_id"]), strings.decode(d["short_id"])
        short = pc.if_else(short.is_valid(), short, name)
    elif kind == "memcpy":
        name = short = _labels(db, "ENUM_CUDA_MEMCPY_OPER", d["code"], "Memcpy ", "Memcpy")
    elif kind == "memset":
        name = short = pa.repeat(pa.scalar("Memset", pa.string()), len(d["start_ns"]))
    else:
        name = short = _labels(db, "ENUM_CUPTI_SYNC_TYPE", d["code"], "", "Synchronization")
    return _part(d, kind=kind, name=name, short_name=short, pid=_pid(d["global_pid"]))


def _runtime_part(db: _Db, strings: _Strings, table: str) -> pa.Table | None:
    if table not in db.tables:
        return None
    c = lambda n: _col(db, table, n)  # noqa: E731
    d = db.columns(
        table,
        {
            "start_ns": c("start"),
            "end_ns": c("end"),
            "global_tid": c("globalTid"),
            "correlation": c("correlationId"),
            "name_id": c("nameId"),
        },
        {},
    )
    name = strings.decode(d["name_id"])
    return _part(
        d,
        kind="runtime",
        name=name,
        short_name=name,
        pid=_pid(d["global_tid"]),
        tid=_tid(d["global_tid"]),
    )


def _nvtx_part(db: _Db, strings: _Strings, warnings: list[str]) -> pa.Table | None:
    if NVTX not in db.tables:
        return None
    c = lambda n: _col(db, NVTX, n)  # noqa: E731
    # Payload as text: the first recorded value column, else the JSON payload.
    payload_cols = [
        n
        for n in (
            "int64Value",
            "uint64Value",
            "int32Value",
            "uint32Value",
            "doubleValue",
            "floatValue",
            "jsonText",
        )
        if n in db.cols(NVTX)
    ]
    payload = (
        "CASE "
        + " ".join(f'WHEN "{n}" IS NOT NULL THEN CAST("{n}" AS TEXT)' for n in payload_cols)
        + " END"
        if payload_cols
        else None
    )
    d = db.columns(
        NVTX,
        {
            "start_ns": c("start"),
            "end_ns": c("end"),
            "event_type": c("eventType"),
            "global_tid": c("globalTid"),
            "text_id": c("textId"),
            "domain_id": c("domainId"),
        },
        {"text": c("text"), "payload": payload},
        where=f'WHERE "eventType" IN ({NVTX_PUSH_POP}, {NVTX_START_END}, {NVTX_MARK})',
    )
    decoded = strings.decode(d["text_id"])
    name = pc.if_else(decoded.is_valid(), decoded, d["text"])
    # Marks are dropped, except nvtx_ranges' payload markers: kept as zero-length
    # ranges, which attribution attaches to the range open around them.
    is_mark = pc.equal(d["event_type"], NVTX_MARK)
    keep = pc.or_(
        pc.invert(is_mark), pc.fill_null(pc.starts_with(name, PAYLOAD_MARKER), False)
    )
    if not pc.all(keep).as_py():
        d = {k: pc.filter(v, keep) for k, v in d.items()}
        name = pc.filter(name, keep)
        is_mark = pc.equal(d["event_type"], NVTX_MARK)
    d["end_ns"] = pc.if_else(is_mark, d["start_ns"], d["end_ns"])
    payload_arr = pc.if_else(pc.equal(d["payload"], ""), pa.scalar(None, pa.string()), d["payload"])

    # Domain names come from the domain-create events (text per domainId).
    domain = pa.nulls(len(name), pa.string())
    if "domainId" in db.cols(NVTX):
        text_sql = "text" if "text" in db.cols(NVTX) else "NULL"
        tid_sql = "textId" if "textId" in db.cols(NVTX) else "NULL"
        created = db.rows(
            f'SELECT domainId, {text_sql}, {tid_sql} FROM "{NVTX}" '
            f"WHERE eventType = {NVTX_DOMAIN_CREATE} AND domainId IS NOT NULL"
        )
        if created:
            ids = pa.array([r[0] for r in created], pa.int64())
            tids = strings.decode(pa.array([r[2] for r in created], pa.int64()))
            texts = pc.if_else(
                tids.is_valid(), tids, pa.array([r[1] for r in created], pa.string())
            )
            idx = pc.index_in(d["domain_id"], value_set=ids)
            domain = texts.take(idx)

    # Unclosed ranges (end NULL: still open when capture stopped) are kept and clamped
    # to the end of the trace, because the GPU work launched inside them (often the
    # outermost phase range) still belongs to them; dropping them would leave it
    # unattributed.  The clamp value is filled in by _read_sqlite once all parts exist.
    unclosed = d["end_ns"].null_count
    if unclosed:
        warnings.append(
            f"{unclosed} NVTX range(s) had no end (still open when capture "
            "stopped) and were clamped to the end of the trace."
        )
    nested = pc.equal(d["event_type"], NVTX_PUSH_POP)
    return _part(
        d,
        kind="range",
        name=name,
        short_name=name,
        pid=_pid(d["global_tid"]),
        tid=_tid(d["global_tid"]),
        domain=domain,
        payload=payload_arr,
        nested=nested,
    )


def _part(d: dict[str, pa.Array], **extra: Any) -> pa.Table:
    n = len(d["start_ns"])
    cols: dict[str, Any] = {}
    for name, typ in _RAW_TYPES.items():
        if name == "kind":
            cols[name] = pa.repeat(pa.scalar(extra["kind"], pa.string()), n)
        elif name in extra:
            cols[name] = pc.cast(extra[name], typ)
        elif name in d:
            cols[name] = pc.cast(d[name], typ)
        else:
            cols[name] = pa.nulls(n, typ)
    return pa.table(cols)


# --------------------------------------------------------------------------- main


def _read_sqlite(path: Path, source: Path, fmt: str) -> RawTrace:
    with path.open("rb") as fh:
        head = fh.read(16)
    if not head.startswith(b"SQLite format 3\x00"):
        raise TracekitError(
            f"{source.name} is not an SQLite database; pass an Nsight Systems export "
            "(`nsys export --type sqlite`) or the .nsys-rep report."
        )
    warnings: list[str] = []
    try:
        db = _Db(path, warnings)
    except sqlite3.DatabaseError as exc:
        raise _corrupt(source, exc) from exc
    try:
        return _read_db(db, source, fmt, warnings)
    except sqlite3.DatabaseError as exc:
        raise _corrupt(source, exc) from exc
    finally:
        db.close()


def _corrupt(source: Path, exc: Exception) -> TracekitError:
    return TracekitError(
        f"{source.name} is a truncated or corrupt SQLite file ({exc}); export the report "
        "again with `nsys export --type sqlite`."
    )


def _read_db(db: _Db, source: Path, fmt: str, warnings: list[str]) -> RawTrace:
    present = db.tables & set(EVENT_TABLES)
    if "StringIds" not in db.tables or not present:
        raise TracekitError(
            f"{source.name} is an SQLite file but not an Nsight Systems export (it has no "
            "StringIds, CUPTI_ACTIVITY_KIND_* or NVTX_EVENTS tables); export the report with "
            "`nsys export --type sqlite` and pass that file."
        )
    for table, what in (
        (KERNEL, "GPU kernels"),
        (NVTX, "NVTX ranges"),
        (RUNTIME, "CUDA API calls"),
    ):
        if table not in db.tables:
            warnings.append(f"The trace has no {what} ({table} is absent).")

    strings = _Strings(db)
    parts = [
        _gpu_part(db, strings, KERNEL, "kernel"),
        _gpu_part(db, strings, MEMCPY, "memcpy"),
        _gpu_part(db, strings, MEMSET, "memset"),
        _gpu_part(db, strings, SYNC, "sync"),
        _runtime_part(db, strings, RUNTIME),
        _runtime_part(db, strings, DRIVER),
        _nvtx_part(db, strings, warnings),
    ]
    table = pa.concat_tables([p for p in parts if p is not None])

    # Clamp unclosed NVTX ranges (see _nvtx_part) to the last timestamp of the trace.
    if table["end_ns"].null_count:
        last = pc.max_element_wise(pc.max(table["end_ns"]), pc.max(table["start_ns"]))
        table = table.set_column(
            table.schema.get_field_index("end_ns"), "end_ns", table["end_ns"].fill_null(last)
        )

    env = session_env(db)
    rank_of, rank_source, world_size = ranks(table, env)
    pids = pa.array(sorted(rank_of), pa.int64())
    rank_values = pa.array([rank_of[p] for p in pids.to_pylist()], pa.int32())
    rank = rank_values.take(pc.index_in(table["pid"], value_set=pids))
    table = table.add_column(0, "rank", rank)

    names: dict[int, str] = {}
    if "PROCESSES" in db.tables and {"pid", "name"} <= set(db.cols("PROCESSES")):
        names = {
            int(p): str(n)
            for p, n in db.rows("SELECT pid, name FROM PROCESSES")
            if p is not None and n is not None
        }
    all_pids = pc.unique(table["pid"].drop_null()).to_pylist()
    processes = sorted(
        ({"pid": p, "rank": rank_of.get(p), "name": names.get(p)} for p in all_pids),
        key=lambda r: (r["rank"] is None, r["rank"] or 0, r["pid"]),
    )
    used = {int(v) for v in pc.unique(table["device"].drop_null()).to_pylist()}
    meta: dict[str, Any] = {
        "format": fmt,
        "profiler": "nsys",
        "profiler_version": meta_value(db, ["EXPORT_PRODUCT_VERSION"]),
        "export_schema_version": meta_value(db, ["EXPORT_SCHEMA_VERSION"]),
        "source": str(source),
        "processes": processes,
        "rank_source": rank_source,
        "world_size": world_size,
        "warnings": warnings,
    }
    gpus = gpus_of(db, used, warnings)
    if gpus is not None:
        meta["gpus"] = gpus
    return RawTrace(table=table, meta=meta, graph_nodes=_graph_nodes(db))


GRAPH_NODES = "CUDA_GRAPH_NODE_EVENTS"


def _graph_nodes(db: _Db) -> pa.Table | None:
    """Graph node creations: where (thread, time) each node was captured or cloned."""
    if GRAPH_NODES not in db.tables:
        return None
    c = lambda n: _col(db, GRAPH_NODES, n)  # noqa: E731
    d = db.columns(
        GRAPH_NODES,
        {
            "start_ns": c("start"),
            "global_tid": c("globalTid"),
            "graph_node_id": c("graphNodeId"),
            "original_graph_node_id": c("originalGraphNodeId"),
        },
        {},
    )
    return pa.table(
        {
            "pid": _pid(d["global_tid"]),
            "tid": _tid(d["global_tid"]),
            "start_ns": d["start_ns"],
            "graph_node_id": d["graph_node_id"],
            "original_graph_node_id": d["original_graph_node_id"],
        }
    )
