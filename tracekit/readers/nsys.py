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

import gzip
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    # Connections are made per thread and used by one thread at a time; closing may
    # happen on another.
    return sqlite3.connect(_ro_uri(db), uri=True, check_same_thread=False)


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


def _gpu_part(db: _Db, strings: _Strings, table: str, kind: str, where: str = "") -> pa.Table | None:
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
    d = db.columns(table, ints, {}, where=where)
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


def _runtime_part(db: _Db, strings: _Strings, table: str, where: str = "") -> pa.Table | None:
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
        where=where,
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


def _payload_sql(db: _Db) -> str | None:
    """Payload as text: the first recorded value column, else the JSON payload."""
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
    if not payload_cols:
        return None
    return (
        "CASE "
        + " ".join(f'WHEN "{n}" IS NOT NULL THEN CAST("{n}" AS TEXT)' for n in payload_cols)
        + " END"
    )


def _domains(db: _Db, strings: _Strings) -> tuple[pa.Array, pa.Array] | None:
    """Domain names from the domain-create events: (domainId, name) arrays."""
    if "domainId" not in db.cols(NVTX):
        return None
    text_sql = "text" if "text" in db.cols(NVTX) else "NULL"
    tid_sql = "textId" if "textId" in db.cols(NVTX) else "NULL"
    created = db.rows(
        f'SELECT domainId, {text_sql}, {tid_sql} FROM "{NVTX}" '
        f"WHERE eventType = {NVTX_DOMAIN_CREATE} AND domainId IS NOT NULL"
    )
    if not created:
        return None
    ids = pa.array([r[0] for r in created], pa.int64())
    tids = strings.decode(pa.array([r[2] for r in created], pa.int64()))
    texts = pc.if_else(tids.is_valid(), tids, pa.array([r[1] for r in created], pa.string()))
    return ids, texts


_RANGE_TYPES = f"({NVTX_PUSH_POP}, {NVTX_START_END}, {NVTX_MARK})"


def _range_names(d: dict[str, pa.Array], strings: _Strings) -> pa.Array:
    decoded = strings.decode(d["text_id"])
    return pc.if_else(decoded.is_valid(), decoded, d["text"])


Creates = tuple[pa.Array, pa.Array]


def _nvtx_part(
    db: _Db, strings: _Strings, where: str = "", creates: bool = False
) -> tuple[pa.Table | None, Creates | None]:
    """NVTX ranges (and nvtx_ranges payload markers) of a rowid window, with
    ``row_key`` (the rowid) and ``domain_id`` columns; domain names are filled by
    :func:`_name_domains`, unclosed ranges keep a NULL end (the caller clamps them).
    With ``creates``, also the window's domain-create events as (ids, names)."""
    if NVTX not in db.tables:
        return None, None
    c = lambda n: _col(db, NVTX, n)  # noqa: E731
    types = f"({NVTX_PUSH_POP}, {NVTX_START_END}, {NVTX_MARK}, {NVTX_DOMAIN_CREATE})" if creates else _RANGE_TYPES
    cond = f'"eventType" IN {types}'
    d = db.columns(
        NVTX,
        {
            "row_key": "rowid",
            "start_ns": c("start"),
            "end_ns": c("end"),
            "event_type": c("eventType"),
            "global_tid": c("globalTid"),
            "text_id": c("textId"),
            "domain_id": c("domainId"),
        },
        {"text": c("text"), "payload": _payload_sql(db)},
        where=f"{where} AND {cond}" if where else f"WHERE {cond}",
    )
    name = _range_names(d, strings)
    made: Creates | None = None
    if creates:
        is_create = pc.equal(d["event_type"], NVTX_DOMAIN_CREATE)
        if pc.any(is_create).as_py():
            made = (pc.filter(d["domain_id"], is_create), pc.filter(name, is_create))
    # Marks are dropped, except nvtx_ranges' payload markers: kept as zero-length
    # ranges, which attribution attaches to the range open around them.
    is_mark = pc.equal(d["event_type"], NVTX_MARK)
    keep = pc.and_(
        pc.or_(pc.invert(is_mark), pc.fill_null(pc.starts_with(name, PAYLOAD_MARKER), False)),
        pc.not_equal(d["event_type"], NVTX_DOMAIN_CREATE),
    )
    if not pc.all(keep).as_py():
        d = {k: pc.filter(v, keep) for k, v in d.items()}
        name = pc.filter(name, keep)
        is_mark = pc.equal(d["event_type"], NVTX_MARK)
    d["end_ns"] = pc.if_else(is_mark, d["start_ns"], d["end_ns"])
    payload_arr = pc.if_else(pc.equal(d["payload"], ""), pa.scalar(None, pa.string()), d["payload"])
    nested = pc.equal(d["event_type"], NVTX_PUSH_POP)
    table = _part(
        d,
        kind="range",
        name=name,
        short_name=name,
        pid=_pid(d["global_tid"]),
        tid=_tid(d["global_tid"]),
        payload=payload_arr,
        nested=nested,
        row_key=d["row_key"],
    )
    return table.append_column("domain_id", d["domain_id"]), made


def _name_domains(table: pa.Table, domains: Creates | None) -> pa.Table:
    """Fill ``domain`` from ``domain_id`` (then dropped) with the domain-create names."""
    if domains is not None:
        i = table.schema.get_field_index("domain")
        named = domains[1].take(pc.index_in(table.column("domain_id"), value_set=domains[0]))
        table = table.set_column(i, "domain", named)
    return table.drop_columns(["domain_id"])


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
    if "row_key" in extra:
        cols["row_key"] = pc.cast(extra["row_key"], pa.int64())
    return pa.table(cols)


# --------------------------------------------------------------------------- main

_END = object()


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """Yield ``items`` while the next one is produced on a background thread (one
    thread for the whole iteration, so a per-thread SQLite connection stays put):
    SQLite and Arrow release the GIL, so reading overlaps the caller's work."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(next, items, _END)
        while (item := fut.result()) is not _END:
            fut = pool.submit(next, items, _END)
            yield item

#: Rows per batch when an export is streamed table by table.
BATCH_ROWS = 1 << 19


@contextmanager
def open_export(path: Path) -> Iterator[Export]:
    """Open an Nsight Systems ``.sqlite`` export (or export a ``.nsys-rep``/``.qdrep``
    report into a temporary folder, removed on exit) for streaming.

    Errors of a truncated or corrupt file, at opening or while reading, become one
    :class:`TracekitError` sentence.
    """
    path = Path(path)
    if not path.is_file():
        raise TracekitError(f"{path} does not exist or is not a file; check the path.")
    with tempfile.TemporaryDirectory(prefix="tracekit-nsys-") as tmp:
        plain = path
        if path.name.lower().endswith(".gz"):
            # SQLite and nsys need a plain file: unpack next to nothing else, in tmp.
            plain = Path(tmp) / path.name[: -len(".gz")]
            try:
                with gzip.open(path, "rb") as src, plain.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (OSError, EOFError, zlib.error) as exc:
                raise TracekitError(f"{path} is not a readable gzip file ({exc}).") from None
        if plain.name.lower().endswith(NSYS_REPORT_SUFFIXES):
            db = _export(plain, Path(tmp))
            with _open_sqlite(db, source=path, fmt="nsys-rep") as ex:
                yield ex
            return
        with _open_sqlite(plain, source=path, fmt="nsys-sqlite") as ex:
            yield ex


@contextmanager
def _open_sqlite(path: Path, source: Path, fmt: str) -> Iterator[Export]:
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
    ex: Export | None = None
    try:
        ex = Export(db, source, fmt, warnings)
        yield ex
    except sqlite3.DatabaseError as exc:
        raise _corrupt(source, exc) from exc
    finally:
        if ex is not None:
            ex.close()
        db.close()


def _corrupt(source: Path, exc: Exception) -> TracekitError:
    return TracekitError(
        f"{source.name} is a truncated or corrupt SQLite file ({exc}); export the report "
        "again with `nsys export --type sqlite`."
    )


@dataclass
class GpuSpans:
    """The GPU activities of an export as narrow NumPy columns, in the row order of
    :meth:`Export.batches`: ``start``/``end`` int64 (:data:`NULL_INT` for NULL), ``pid``
    and ``device`` int32 and ``corr`` int64 (-1 for NULL), ``name`` int64 (the
    ``StringIds`` id of a kernel's name, -1 for NULL and on memcpy and memset rows);
    ``kinds`` lists each table's (kind, rows, whether it records both process and
    device) in order."""

    kinds: list[tuple[str, int, bool]]
    start: np.ndarray
    end: np.ndarray
    pid: np.ndarray
    device: np.ndarray
    corr: np.ndarray
    name: np.ndarray


def _read_gpu_spans(db: _Db, windows: Callable[[str, int], Iterator[str]]) -> GpuSpans:
    """:class:`GpuSpans` of the kernel, memcpy and memset tables, read in the same rowid
    windows as :meth:`Export.batches` (a column the table lacks is all NULL)."""
    keys = ("start", "end", "pid", "device", "corr", "name")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    kinds: list[tuple[str, int, bool]] = []
    for table, kind in ((KERNEL, "kernel"), (MEMCPY, "memcpy"), (MEMSET, "memset")):
        if table not in db.tables:
            continue
        c = lambda n, e=None, t=table: _col(db, t, n, e)  # noqa: E731
        ints = {
            "start": c("start"),
            "end": c("end"),
            "pid": c("globalPid", f'("globalPid" >> 24) & {_ID_MASK}'),
            "device": c("deviceId"),
            "corr": c("correlationId"),
            # Kernel names classify into compute and communication (exposed time).
            "name": c("demangledName") if kind == "kernel" else None,
        }
        rows = 0
        for where in windows(table, BATCH_ROWS):
            d = db.columns(table, ints, {}, where=where)
            for k in keys:
                fill = NULL_INT if k in ("start", "end") else -1
                a = np.asarray(d[k].fill_null(fill).to_numpy(zero_copy_only=False), np.int64)
                parts[k].append(a.astype(np.int32) if k in ("pid", "device") else a)
            rows += len(d["start"])
        kinds.append((kind, rows, bool(ints["pid"] and ints["device"])))
    empty = {k: np.zeros(0, np.int32 if k in ("pid", "device") else np.int64) for k in keys}
    cols = {k: np.concatenate(parts.pop(k)) if parts[k] else empty[k] for k in keys}
    return GpuSpans(kinds=kinds, **cols)


class Export:
    """One opened export, read in rowid windows table by table, so that no step holds
    more than one batch of full rows.  Attribution's inputs (the NVTX ranges usable as
    launch stacks, the launching calls, graph nodes) and the GPU activities' times,
    devices and launches (ranks, busy time) are read as narrow columns."""

    def __init__(self, db: _Db, source: Path, fmt: str, warnings: list[str]):
        present = db.tables & set(EVENT_TABLES)
        if "StringIds" not in db.tables or not present:
            raise TracekitError(
                f"{source.name} is an SQLite file but not an Nsight Systems export (it has "
                "no StringIds, CUPTI_ACTIVITY_KIND_* or NVTX_EVENTS tables); export the "
                "report with `nsys export --type sqlite` and pass that file."
            )
        for table, what in (
            (KERNEL, "GPU kernels"),
            (NVTX, "NVTX ranges"),
            (RUNTIME, "CUDA API calls"),
        ):
            if table not in db.tables:
                warnings.append(f"The trace has no {what} ({table} is absent).")
        self.db, self.source, self.fmt, self.warnings = db, source, fmt, warnings
        # One SQLite connection per thread: ingest reads several tables at once.
        self._local = threading.local()
        self._local.db = db
        self._extra_dbs: list[_Db] = []
        self._lock = threading.Lock()
        self.strings = _Strings(db)
        self._domain_names: Creates | None = None
        self._domains_known = NVTX not in db.tables
        self._spill: Path | None = None
        self._spill_dir: str | None = None
        self.unclosed = 0
        self._last: int | None = None
        self._rank_info: tuple[dict[int, int], str, int | None] | None = None
        self._seen_pids: set[int] = set()
        self._seen_devices: set[int] = set()
        self._spans: GpuSpans | None = None
        self._spans_lock = threading.Lock()

    def _db(self) -> _Db:
        db: _Db | None = getattr(self._local, "db", None)
        if db is None:
            db = _Db(self.db.path, self.warnings)
            self._local.db = db
            with self._lock:
                self._extra_dbs.append(db)
        return db

    def close(self) -> None:
        for db in self._extra_dbs:
            db.close()
        self._extra_dbs.clear()
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = self._spill = None

    @property
    def domains(self) -> Creates | None:
        if not self._domains_known:
            self._domain_names = _domains(self._db(), self.strings)
            self._domains_known = True
        return self._domain_names

    def rank_info(self) -> tuple[dict[int, int], str, int | None]:
        """(pid -> rank, rank source, world size), from per-process GPU activity."""
        if self._rank_info is None:
            info = ranks(self._gpu_groups(), session_env(self._db()))
            self._rank_pids = pa.array(sorted(info[0]), pa.int64())
            self._rank_values = pa.array([info[0][p] for p in self._rank_pids.to_pylist()], pa.int32())
            self._rank_info = info
        return self._rank_info

    # ----------------------------------------------------------- run-level facts

    def _gpu_groups(self) -> list[tuple[int | None, int | None, int, int, int | None]]:
        """(pid, device, kernels, activities, first kernel start) per process and device,
        aggregated (Arrow) from the narrow GPU columns, never per event."""
        sp = self.gpu_spans()
        keep = np.zeros(len(sp.start), bool)
        is_kernel = np.zeros(len(sp.start), bool)
        at = 0
        for kind, rows, has_ids in sp.kinds:
            keep[at : at + rows] = has_ids  # a table without pid or device is left out
            is_kernel[at : at + rows] = kind == "kernel"
            at += rows
        sel = np.flatnonzero(keep)
        if not len(sel):
            return []
        start, kern = sp.start[sel], is_kernel[sel]
        t = pa.table(
            {
                "pid": pa.array(sp.pid[sel], mask=sp.pid[sel] < 0),
                "device": pa.array(sp.device[sel], mask=sp.device[sel] < 0),
                "kernel": pa.array(kern.astype(np.int64)),
                "kstart": pa.array(start, mask=~kern | (start == NULL_INT)),
            }
        )
        g = t.group_by(["pid", "device"]).aggregate(
            [("kernel", "sum"), ("kernel", "count"), ("kstart", "min")]
        )
        return list(
            zip(
                g.column("pid").to_pylist(),
                g.column("device").to_pylist(),
                g.column("kernel_sum").to_pylist(),
                g.column("kernel_count").to_pylist(),
                g.column("kstart_min").to_pylist(),
                strict=True,
            )
        )

    def rank_array(self, pid: np.ndarray) -> np.ndarray:
        """Rank (int32, -1 unknown) of each pid, as NumPy, without Arrow copies."""
        self.rank_info()
        pids = np.asarray(self._rank_pids.to_numpy(zero_copy_only=False), np.int64)
        values = np.asarray(self._rank_values.to_numpy(zero_copy_only=False), np.int32)
        if not len(pids):
            return np.full(len(pid), -1, np.int32)
        at = np.clip(np.searchsorted(pids, pid), 0, len(pids) - 1)
        return np.where(pids[at] == pid, values[at], -1).astype(np.int32)

    def rank(self, pid: pa.Array) -> pa.Array:
        self.rank_info()
        return self._rank_values.take(pc.index_in(pid, value_set=self._rank_pids))

    def last_ns(self) -> int:
        """The trace's last timestamp: where ranges still open at the end are clamped."""
        if self._last is None:
            last = 0
            db = self._db()
            for table in EVENT_TABLES:
                if table in db.tables and {"start", "end"} <= set(db.cols(table)):
                    hi = db.rows(f'SELECT max("end"), max("start") FROM "{table}"')[0]
                    last = max([last, *(v for v in hi if v is not None)])
            self._last = last
        return self._last

    def meta(self) -> dict[str, Any]:
        """The reader's metadata; call it after :meth:`batches` has run to the end (it
        reports the processes, devices and warnings seen there)."""
        db = self.db
        warnings = list(self.warnings)
        if self.unclosed:
            warnings.append(
                f"{self.unclosed} NVTX range(s) had no end (still open when capture "
                "stopped) and were clamped to the end of the trace."
            )
        names: dict[int, str] = {}
        if "PROCESSES" in db.tables and {"pid", "name"} <= set(db.cols("PROCESSES")):
            names = {
                int(p): str(n)
                for p, n in db.rows("SELECT pid, name FROM PROCESSES")
                if p is not None and n is not None
            }
        rank_of, rank_source, world_size = self.rank_info()
        # Processes and devices as seen while the rows streamed past.
        all_pids, used = self._seen_pids, self._seen_devices
        processes = sorted(
            ({"pid": p, "rank": rank_of.get(p), "name": names.get(p)} for p in all_pids),
            key=lambda r: (r["rank"] is None, r["rank"] or 0, r["pid"]),
        )
        meta: dict[str, Any] = {
            "format": self.fmt,
            "profiler": "nsys",
            "profiler_version": meta_value(db, ["EXPORT_PRODUCT_VERSION"]),
            "export_schema_version": meta_value(db, ["EXPORT_SCHEMA_VERSION"]),
            "source": str(self.source),
            "processes": processes,
            "rank_source": rank_source,
            "world_size": world_size,
            "warnings": warnings,
        }
        gpus = gpus_of(db, used, warnings)
        if gpus is not None:
            meta["gpus"] = gpus
        return meta

    # ----------------------------------------------------------- row batches

    def _windows(self, table: str, rows: int) -> Iterator[str]:
        db = self._db()
        # Two queries: SQLite answers a lone min() or max() of rowid from the b-tree.
        lo = db.rows(f'SELECT min(rowid) FROM "{table}"')[0][0]
        hi = db.rows(f'SELECT max(rowid) FROM "{table}"')[0][0]
        if lo is None or hi is None:
            return
        for a in range(int(lo) - 1, int(hi), rows):
            yield f"WHERE rowid > {a} AND rowid <= {a + rows}"

    def batches(self, rows: int | None = None) -> Iterator[pa.Table]:
        """Every event row, table by table, in batches of up to ``rows`` rows: the
        raw columns of :mod:`tracekit.readers` plus ``rank``, and ``row_key`` (the
        NVTX rowid) on ranges.  Unclosed ranges are clamped to the trace's end."""
        rows = rows or BATCH_ROWS
        s = self.strings
        db = self._db()
        parts: list[tuple[str, Callable[[str], pa.Table | None]]] = [
            (KERNEL, lambda w: _gpu_part(db, s, KERNEL, "kernel", w)),
            (MEMCPY, lambda w: _gpu_part(db, s, MEMCPY, "memcpy", w)),
            (MEMSET, lambda w: _gpu_part(db, s, MEMSET, "memset", w)),
            (SYNC, lambda w: _gpu_part(db, s, SYNC, "sync", w)),
            (RUNTIME, lambda w: _runtime_part(db, s, RUNTIME, w)),
            (DRIVER, lambda w: _runtime_part(db, s, DRIVER, w)),
            (NVTX, lambda w: _nvtx_part(db, s, w)[0]),
        ]
        for table, part in parts:
            if table not in db.tables:
                continue
            for t in self._spilled() if table == NVTX and self._spill else (
                part(where) for where in self._windows(table, rows)
            ):
                if t is None or t.num_rows == 0:
                    continue
                if table == NVTX:
                    t = _name_domains(t, self.domains)
                    open_ = t.column("end_ns").null_count
                    if open_:
                        self.unclosed += open_
                        i = t.schema.get_field_index("end_ns")
                        t = t.set_column(i, "end_ns", t.column("end_ns").fill_null(self.last_ns()))
                self._seen_pids.update(p for p in pc.unique(t.column("pid")).to_pylist() if p is not None)
                self._seen_devices.update(
                    d for d in pc.unique(t.column("device")).to_pylist() if d is not None
                )
                yield t.add_column(0, "rank", self.rank(t.column("pid")))

    def gpu_spans(self) -> GpuSpans:
        """Every GPU activity (kernel, memcpy, memset) as narrow columns, in the order
        :meth:`batches` yields their rows (table by table, rowid windows); read once
        and kept until :meth:`drop_gpu_spans` (ranks and the ingest-time columns of
        :mod:`tracekit.streamed` need them)."""
        with self._spans_lock:
            if self._spans is None:
                self._spans = _read_gpu_spans(self._db(), self._windows)
            return self._spans

    def drop_gpu_spans(self) -> None:
        with self._spans_lock:
            self._spans = None

    def _spilled(self) -> Iterator[pa.Table]:
        assert self._spill is not None
        with pa.OSFile(str(self._spill)) as fh:
            reader = pa.ipc.open_file(fh)
            for i in range(reader.num_record_batches):
                yield pa.Table.from_batches([reader.get_batch(i)])

    # ----------------------------------------------------------- attribution inputs

    def stack_ranges(self, rows: int | None = None) -> dict[str, Any]:
        """What attribution needs of the NVTX ranges, as narrow arrays in rowid order:
        push/pop ranges usable as launch stacks (``pid``, ``tid``, ``start``,
        ``end``, ``names`` as base-name codes and ``name_values``), their payloads
        (sparse), nvtx_ranges payload markers, and every range's base name.

        NVTX is read once: the full rows of each window also go to an
        lz4-compressed Arrow IPC file in a temporary folder, which :meth:`batches`
        then reads back instead of querying SQLite a second time, each row with its
        ``range_pos``: its position in these arrays, or -1."""
        empty = np.zeros(0, np.int64)
        out: dict[str, Any] = {
            "pid": empty, "tid": empty, "start": empty, "end": empty,
            "names": empty, "name_values": [], "all_names": set(),
            "payload_pos": empty, "payload_text": [],
            "marker_pid": empty, "marker_tid": empty, "marker_time": empty, "marker_text": [],
        }
        db = self._db()
        if NVTX not in db.tables:
            return out
        from tracekit.attribute import base_names

        rows = rows or BATCH_ROWS
        values: dict[str, int] = {}
        keys = ("pid", "tid", "start", "end", "names")
        acc: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        pl_pos: list[np.ndarray] = []
        pl_text: list[Any] = []
        markers: dict[str, list[Any]] = {"pid": [], "tid": [], "time": [], "text": []}
        creates: list[Creates] = []
        writer: pa.ipc.RecordBatchFileWriter | None = None
        n_kept = 0

        def np64(a: pa.Array | pa.ChunkedArray, fill: int = -1) -> np.ndarray:
            return np.asarray(pc.fill_null(a, fill).to_numpy(zero_copy_only=False), np.int64)

        def fetch() -> Iterator[tuple[pa.Table | None, Creates | None]]:
            wdb = self._db()  # the prefetch thread's own connection
            for where in self._windows(NVTX, rows):
                yield _nvtx_part(wdb, self.strings, where, creates=True)

        try:
            for t, made in prefetched(fetch()):
                if made is not None:
                    creates.append(made)
                if t is None or t.num_rows == 0:
                    continue
                names = t.column("name")
                enc = pc.dictionary_encode(base_names(names).combine_chunks())
                dist = enc.dictionary.to_pylist()
                local = [values.setdefault(v or "", len(values)) for v in dist]
                codes = np.asarray([*local, values.setdefault("", len(values))], np.int64)[
                    np64(enc.indices, len(local))
                ]
                out["all_names"].update(v for v in dist if v)
                start = np64(t.column("start_ns"), 0)
                end_col = t.column("end_ns")
                if end_col.null_count:
                    end_col = end_col.fill_null(self.last_ns())
                end = np64(end_col, 0)
                tid = np64(t.column("tid"))
                pid = np64(t.column("pid"))
                nested = np.asarray(t.column("nested").to_numpy(zero_copy_only=False), bool)
                marker = (start == end) & np.asarray(
                    pc.fill_null(pc.starts_with(names, PAYLOAD_MARKER), False).to_numpy(
                        zero_copy_only=False
                    ),
                    bool,
                ) & (tid >= 0)
                if marker.any():
                    m = np.flatnonzero(marker)
                    markers["pid"].append(pid[m])
                    markers["tid"].append(tid[m])
                    markers["time"].append(start[m])
                    markers["text"].extend(names.take(pa.array(m)).to_pylist())
                keep = np.flatnonzero(nested & (tid >= 0) & (end > start))
                # The spilled rows carry their position in the index (-1: not a
                # launch stack range), so the second pass needs no lookup.
                pos = np.full(t.num_rows, -1, np.int32)
                pos[keep] = np.arange(n_kept, n_kept + len(keep), dtype=np.int32)
                part = t.drop_columns(["row_key"]).append_column("range_pos", pa.array(pos))
                if writer is None:
                    self._spill_dir = tempfile.mkdtemp(prefix="tracekit-nvtx-")
                    self._spill = Path(self._spill_dir) / "nvtx.arrow"
                    writer = pa.ipc.new_file(
                        str(self._spill), part.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")
                    )
                writer.write_table(part)
                del part, pos
                for k, v in zip(keys, (pid, tid, start, end, codes), strict=True):
                    # pid, tid (24-bit) and name codes fit int32: this is what stays.
                    acc[k].append(v[keep].astype(np.int32) if k in ("pid", "tid", "names") else v[keep])
                payload = t.column("payload").take(pa.array(keep))
                if payload.null_count < len(payload):
                    has = np.flatnonzero(np.asarray(payload.is_valid().to_numpy(zero_copy_only=False), bool))
                    pl_pos.append(has + n_kept)
                    pl_text.extend(payload.take(pa.array(has)).to_pylist())
                n_kept += len(keep)
        finally:
            if writer is not None:
                writer.close()
        if creates:
            self._domain_names = (
                pa.concat_arrays([c[0] for c in creates]),
                pa.concat_arrays([c[1] for c in creates]),
            )
        self._domains_known = True
        for k in keys:  # one key at a time, so the parts and the whole overlap for one key
            parts = acc.pop(k)
            out[k] = np.concatenate(parts) if parts else empty
            del parts
        out["name_values"] = list(values)
        out["payload_pos"] = np.concatenate(pl_pos) if pl_pos else empty
        out["payload_text"] = pl_text
        if markers["pid"]:
            out.update(
                marker_pid=np.concatenate(markers["pid"]),
                marker_tid=np.concatenate(markers["tid"]),
                marker_time=np.concatenate(markers["time"]),
                marker_text=markers["text"],
            )
        return out

    def launch_calls(self) -> dict[str, np.ndarray]:
        """CUDA runtime and driver calls with a correlation: pid, tid, correlation, start."""
        parts: list[dict[str, pa.Array]] = []
        db = self._db()
        for table in (RUNTIME, DRIVER):
            if table not in db.tables or "correlationId" not in db.cols(table):
                continue
            parts.append(
                db.columns(
                    table,
                    {"gtid": _col(db, table, "globalTid"), "corr": '"correlationId"', "start": '"start"'},
                    {},
                    where='WHERE "correlationId" IS NOT NULL',
                )
            )

        def cat(k: str) -> np.ndarray:
            if not parts:
                return np.zeros(0, np.int64)
            return np.concatenate(
                [np.asarray(p[k].fill_null(-1).to_numpy(zero_copy_only=False), np.int64) for p in parts]
            )

        g = cat("gtid")
        return {"pid": (g >> 24) & _ID_MASK, "tid": g & _ID_MASK, "corr": cat("corr"), "start": cat("start")}

    def graph_nodes(self) -> pa.Table | None:
        return _graph_nodes(self._db())

    def replayed_nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """(pid, graph node id) of every distinct node GPU work was replayed from."""
        pids: list[np.ndarray] = []
        nodes: list[np.ndarray] = []
        db = self._db()
        for table in GPU_TABLES:
            cols = db.cols(table)
            if table not in db.tables or not {"graphNodeId", "globalPid"} <= set(cols):
                continue
            d = db.columns(
                table,
                {"pid": f'("globalPid" >> 24) & {_ID_MASK}', "node": '"graphNodeId"'},
                {},
                where='WHERE "graphNodeId" IS NOT NULL GROUP BY 1, 2',
            )
            pids.append(np.asarray(d["pid"].fill_null(-1).to_numpy(zero_copy_only=False), np.int64))
            nodes.append(np.asarray(d["node"].fill_null(-1).to_numpy(zero_copy_only=False), np.int64))
        if not pids:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(pids), np.concatenate(nodes)


def read(path: Path) -> RawTrace:
    """Read a whole Nsight Systems ``.sqlite`` export or ``.nsys-rep``/``.qdrep`` report
    into one table (``tracekit ingest`` streams it instead: :class:`Export`).

    >>> read(Path("run.nsys-rep")).meta["profiler"]  # doctest: +SKIP
    'nsys'
    """
    with open_export(path) as ex:
        parts = [
            p.drop_columns(["row_key"]) if "row_key" in p.column_names else p
            for p in ex.batches()
        ]
        if parts:
            table = pa.concat_tables(parts)
        else:
            table = pa.table(
                {"rank": pa.array([], pa.int32()), **{k: pa.array([], t) for k, t in _RAW_TYPES.items()}}
            )
        return RawTrace(table=table, meta=ex.meta(), graph_nodes=ex.graph_nodes())


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
