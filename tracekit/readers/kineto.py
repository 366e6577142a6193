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

import contextlib
import gzip
import importlib
import itertools
import json
import math
import os
import re
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.errors import TracekitError
from tracekit.readers import RawTrace

#: Payload markers written by nvtx_ranges (see nvtx_ranges._core.PAYLOAD_PREFIX).
PAYLOAD_PREFIX = "tracekit.payload:"

# The fields read from each event and from its args.  Everything that could be
# written with another JSON type by some producer is read as text and cast with
# TRY_CAST: one odd value must not fail the whole file.
# Collective kernels carry their message ("In msg nelems", "dtype") in recent torch.
_ARGS = (
    "STRUCT(correlation VARCHAR, device VARCHAR, stream VARCHAR, bytes VARCHAR, name VARCHAR, "
    '"In msg nelems" VARCHAR, dtype VARCHAR)'
)
# Bytes per element of torch dtype names as the profiler writes them.
_DTYPE_BYTES_SQL = """CASE lower(cdtype)
    WHEN 'bfloat16' THEN 2 WHEN 'half' THEN 2 WHEN 'float16' THEN 2 WHEN 'short' THEN 2
    WHEN 'float' THEN 4 WHEN 'float32' THEN 4 WHEN 'int' THEN 4 WHEN 'int32' THEN 4
    WHEN 'double' THEN 8 WHEN 'float64' THEN 8 WHEN 'long' THEN 8 WHEN 'int64' THEN 8
    WHEN 'byte' THEN 1 WHEN 'char' THEN 1 WHEN 'bool' THEN 1 WHEN 'int8' THEN 1 WHEN 'uint8' THEN 1
    ELSE CASE WHEN lower(cdtype) LIKE 'float8%' THEN 1 END END"""
_EVENT_FIELDS = {
    "ph": "VARCHAR",
    "cat": "VARCHAR",
    "name": "VARCHAR",
    "pid": "VARCHAR",
    "tid": "VARCHAR",
    "ts": "DOUBLE",
    "dur": "DOUBLE",
    "id": "VARCHAR",
    "args": _ARGS,
}
_EVENT = "STRUCT(" + ", ".join(f"{k} {v}" for k, v in _EVENT_FIELDS.items()) + ")"
_HEADER = {
    "schemaVersion": "JSON",
    "distributedInfo": "JSON",
    "deviceProperties": "JSON",
    "displayTimeUnit": "VARCHAR",
    "baseTimeNanoseconds": "JSON",
    "trace_id": "VARCHAR",
    "cupti_version": "JSON",
    "cuda_runtime_version": "JSON",
    "cuda_driver_version": "JSON",
    "roctracer_version": "JSON",
    "hip_runtime_version": "JSON",
    "hip_driver_version": "JSON",
}
_VERSION_KEYS = (
    "cupti_version",
    "cuda_runtime_version",
    "cuda_driver_version",
    "roctracer_version",
    "hip_runtime_version",
    "hip_driver_version",
)

# Raw category (lower case) -> kind.  GPU-side categories get device/stream and the
# launching process's pid.
_KIND_SQL = r"""
CASE
  WHEN cat = 'kernel' THEN 'kernel'
  WHEN cat IN ('gpu_memcpy', 'memcpy') THEN 'memcpy'
  WHEN cat IN ('gpu_memset', 'memset') THEN 'memset'
  WHEN cat IN ('cuda_runtime', 'cuda_driver', 'runtime') THEN 'runtime'
  WHEN cat = 'cuda_sync' THEN 'sync'
  WHEN cat IN ('user_annotation', 'gpu_user_annotation') THEN 'range'
  WHEN cat = 'operator' AND regexp_full_match(name, 'ProfilerStep#\d+') THEN 'range'
  WHEN cat IN ('cpu_op', 'operator') THEN 'cpu_op'
  WHEN cat = 'python_function' AND starts_with(name, 'nn.Module: ') THEN 'range'
END"""
_GPU_CATS = (
    "'kernel', 'gpu_memcpy', 'memcpy', 'gpu_memset', 'memset', 'cuda_sync', 'gpu_user_annotation'"
)
_FLOW_CATS = "'ac2g', 'async', 'async_cpu_to_gpu'"

# Microseconds (DOUBLE) to integer ns: whole microseconds exactly, the fraction
# rounded once; start and end each from their own instant.
_START_NS = "(CAST(floor(ts) AS BIGINT) * 1000 + CAST(round((ts - floor(ts)) * 1000) AS BIGINT))"
_END_NS = (
    "(CAST(floor(ts) AS BIGINT) * 1000"
    " + CAST(round((ts - floor(ts)) * 1000 + coalesce(greatest(dur, 0), 0) * 1000) AS BIGINT))"
)
# Above 2**43 us a float64 no longer resolves 1 ns.
_EXACT_LIMIT_US = float(2**43)


def _ev_sql(source: str, table: str = "TEMP TABLE ev") -> str:
    """The statement that fills temp table ``ev`` from ``source``, a FROM clause
    whose rows have one event struct ``e`` each (a column of the unnested document,
    or the rows of the traceEvents array read on its own).

    ``ev`` keeps what the rest needs, converted once: the kept ``X`` events (one
    row per output event), ``process_name`` metadata and flow ends (``f``).
    """
    return f"""
    CREATE {table} AS
    SELECT ph, kind, name, is_gpu,
           cat = 'python_function' AS is_module,
           cat IN ('operator', 'runtime') AS is_2021,
           rpid, rtid, start_ns, end_ns, ts,
           TRY_CAST(corr AS BIGINT) AS correlation,
           TRY_CAST(dev AS INTEGER) AS dev,
           TRY_CAST(strm AS BIGINT) AS strm,
           coalesce(TRY_CAST(nbytes AS BIGINT),
                    TRY_CAST(nelems AS BIGINT) * ({_DTYPE_BYTES_SQL})) AS nbytes,
           CASE WHEN ph = 'f' THEN TRY_CAST(fid AS BIGINT) END AS fid,
           CASE WHEN ph = 'M' THEN aname END AS aname
    FROM (
      SELECT ph, cat, name, CASE WHEN ph = 'X' THEN {_KIND_SQL} END AS kind,
             cat IN ({_GPU_CATS}) AS is_gpu,
             TRY_CAST(pid AS BIGINT) AS rpid,
             TRY_CAST(regexp_replace(tid, '^stream ', '') AS BIGINT) AS rtid,
             CASE WHEN isfinite(ts) THEN {_START_NS} END AS start_ns,
             CASE WHEN isfinite(ts) THEN {_END_NS} END AS end_ns,
             ts, corr, dev, strm, nbytes, nelems, cdtype, fid, aname
      FROM (
        SELECT e.ph AS ph, lower(e.cat) AS cat, e.name AS name,
               e.pid AS pid, e.tid AS tid, e.ts AS ts, e.dur AS dur, e.id AS fid,
               e.args.correlation AS corr, e.args.device AS dev, e.args.stream AS strm,
               e.args.bytes AS nbytes, e.args.name AS aname,
               e.args."In msg nelems" AS nelems, e.args.dtype AS cdtype
        FROM {source} WHERE e.ph IN ('X', 'M', 'f')
      )
    )
    WHERE (ph = 'X' AND kind IS NOT NULL AND start_ns IS NOT NULL)
       OR (ph = 'M' AND name = 'process_name')
       OR (ph = 'f' AND cat IN ({_FLOW_CATS}) AND ts IS NOT NULL)
    """


def read(path: Path) -> RawTrace:
    """Read one Kineto JSON trace into the raw events table and its metadata.

    >>> raw = read(Path("rank0.pt.trace.json.gz"))  # doctest: +SKIP
    >>> raw.meta["rank"], raw.table.num_rows  # doctest: +SKIP
    (0, 123456)
    """
    path = Path(path)
    _check_file(path)
    warm = _PandasImport()
    con = _open()
    try:
        # No progress bar on stderr: a reader is called from the CLI and from tests.
        con.execute("SET enable_progress_bar = false")
        try:
            header = _load(con, path, warm.start)
        finally:
            # Before anything here imports again (the thread holds import locks).
            warm.join()
        table, stats = _events(con)
    finally:
        _close(con)
    meta = _meta(path, header, stats)
    rank_col = _rank_column(table, meta)
    table = table.append_column("rank", rank_col)
    return RawTrace(table=table, meta=meta)


_DB: duckdb.DuckDBPyConnection | None = None
_DB_LOCK = threading.Lock()


def _database() -> duckdb.DuckDBPyConnection:
    """The in-memory DuckDB database that the Kineto files being read share.

    Each :func:`read` takes its own connection to it (a cursor: its temp tables are
    its own), so files read on several threads share one pool of DuckDB worker
    threads, one per core, instead of each starting its own (opening a database
    costs about 30 ms, a cursor nothing); the last read to end closes it.
    """
    global _DB
    with _DB_LOCK:
        if _DB is None:
            # Freed memory goes back to the OS after each task above a few MB
            # (default: 128 MB), so a read's parse buffers do not stay resident
            # through attribution.
            _DB = duckdb.connect(
                config={
                    "threads": _threads(),
                    "allocator_flush_threshold": "8MB",
                    "allocator_bulk_deallocation_flush_threshold": "8MB",
                }
            )
        return _DB


def _threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


_ACTIVE = 0  # files being read right now, on all threads


def _open() -> duckdb.DuckDBPyConnection:
    """A connection of its own to the shared database, for one file's read."""
    global _ACTIVE
    with _DB_LOCK:
        _ACTIVE += 1
    try:
        return _database().cursor()
    except BaseException:
        _close(None)
        raise


def _close(con: duckdb.DuckDBPyConnection | None) -> None:
    """End one file's read; the last read to end closes the database, which hands
    what DuckDB still holds (70 MB after a 54 MB trace) back to the OS before
    attribution."""
    global _ACTIVE, _DB
    if con is not None:
        con.close()
    with _DB_LOCK:
        _ACTIVE -= 1
        if _ACTIVE == 0 and _DB is not None:
            _DB.close()
            _DB = None


def _reading() -> int:
    with _DB_LOCK:
        return _ACTIVE


def _parts_for(array: int) -> int:
    """How many parts an array of ``array`` bytes is cut into: enough to keep each
    under :data:`_PART_MAX`, and enough to give every DuckDB thread one while fewer
    files than threads are being read (several files read at once already keep
    the threads busy, and each cut costs a copy of its rows)."""
    if array < _PART_MIN * 2:
        return 1
    idle = -(-_threads() // max(1, _reading()))
    return max(1, idle, -(-array // _PART_MAX))


class _PandasImport:
    """Import pandas on a thread while DuckDB parses (it releases the GIL).

    pyarrow imports pandas, when installed, on the first conversion of a Python
    value (``pc.equal(col, "kernel")``, ``pa.array(list)``, ``to_numpy``), which
    every caller of this reader reaches right after it: 0.3-0.6 s of a CLI run
    that can overlap the parse instead of following it.  Started only once the
    file has been copied: the copy needs the GIL too.
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is not None or "pandas" in sys.modules:
            return
        thread = threading.Thread(target=self._run, name="tracekit-import-pandas", daemon=True)
        with contextlib.suppress(RuntimeError):  # no thread to be had: import later
            thread.start()
            self.thread = thread

    @staticmethod
    def _run() -> None:
        with contextlib.suppress(Exception):  # absent or broken: pyarrow does without
            importlib.import_module("pandas")

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


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


def _check_file(path: Path) -> None:
    if not path.exists():
        raise TracekitError(f"{path} does not exist.")
    if not path.is_file():
        raise TracekitError(f"{path} is not a file.")
    if path.stat().st_size == 0:
        raise TracekitError(f"{path} is empty, not a Kineto trace.")


def _object_limit(path: Path) -> int:
    """An upper bound on the JSON document's size, for DuckDB's maximum_object_size."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
        if gz:
            fh.seek(-4, 2)
            isize = int.from_bytes(fh.read(4), "little")  # size mod 2**32
            size = max(isize, size * 50)
    return max(size + 1024, 16 << 20)


def _load(
    con: duckdb.DuckDBPyConnection, path: Path, parsing: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """Parse the file into temp table ``ev`` (one row per event) and return the header.

    The ``traceEvents`` array is copied out of the document and read on its own
    (:func:`_load_array`); a file that this cannot handle is parsed whole
    (:func:`_load_document`), which also gives every error its message.
    ``parsing`` is called as DuckDB starts to parse.
    """
    header = _load_array(con, path, parsing)
    if header is None:
        header = _load_document(con, path, parsing)
    return header


# The fast path.  DuckDB reads one JSON document (an object of any size) on one
# thread at ~30 MB/s, but a top-level array of small objects about seven times as
# fast, and several such files on several threads at once.  So the text of the
# ``traceEvents`` array, from its ``[`` to its matching ``]``, goes to temporary
# files (decompressed on the way, in chunks), cut into one part per DuckDB thread
# between two events, and the header keys before and after it are parsed with
# ``json``.
_CHUNK = 1 << 20
#: How far into the (decompressed) file the ``traceEvents`` key is looked for.
_HEAD_LIMIT = 64 << 20
#: The end of the file searched for the array's closing bracket, first and at most.
_TAIL_FIRST, _TAIL_LIMIT = 256 << 10, 16 << 20
#: Arrays shorter than twice this are not cut; no cut within this much of the end.
_PART_MIN = 4 << 20
#: The largest part: DuckDB holds a part whole while it parses it (on each thread).
_PART_MAX = 8 << 20
_KEY = re.compile(rb'"traceEvents"[ \t\n\r]*:[ \t\n\r]*\[')
_WS = re.compile(r"[ \t\n\r]*")
# Where one event ends and the next begins: ``}``, a comma, ``{``, with a line break
# in the whitespace (as every profiler writes its events).  JSON strings cannot hold
# a raw line break, so this is never inside a string; where it is between two
# objects of a nested list instead, the parts are not valid arrays, DuckDB says so,
# and the file is read the slow way.
_CUT = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")


def _load_array(
    con: duckdb.DuckDBPyConnection, path: Path, parsing: Callable[[], None] = lambda: None
) -> dict[str, Any] | None:
    """Fill ``ev`` from the ``traceEvents`` array alone; None where the file has
    another shape, is damaged, or DuckDB refuses the array (the caller then parses
    the whole document, and reports what is wrong with it)."""
    parts: list[Path] = []
    try:
        doc = _copy_array(path, parts)
        if doc is None:
            return None
        parsing()
        try:
            _parse_parts(con, parts)
        except duckdb.Error:
            con.execute("DROP TABLE IF EXISTS ev")
            return None
    except (OSError, EOFError, zlib.error, ValueError, RecursionError):
        return None
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    header: dict[str, Any] = {}
    for k, typ in _HEADER.items():
        v = doc.get(k)
        if v is not None and typ == "VARCHAR" and not isinstance(v, str):
            v = json.dumps(v, separators=(",", ":"))  # as DuckDB casts JSON to text
        header[k] = v
    return header


def _parse_parts(con: duckdb.DuckDBPyConnection, parts: list[Path]) -> None:
    """Parse the array's parts into ``ev``, in file order.

    Parts are parsed at once, each by its own connection into a table of the
    shared database, then appended to ``ev`` one after the other: DuckDB keeps the
    order of rows within one scan, not across the files of a multi-file scan, and
    the order of events decides ties downstream (ranges with equal times).
    """
    spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in _EVENT_FIELDS.items()) + "}"

    def source(part: Path) -> str:
        return f"read_json('{_sql_text(part)}', columns={spec}, format='array', records='true') AS e"

    if len(parts) == 1:
        con.execute(_ev_sql(source(parts[0])))
        return
    token = f"tk_part_{os.getpid()}_{threading.get_ident()}_{next(_PART_IDS)}"
    names = [f"{token}_{i}" for i in range(len(parts))]

    def parse(i: int) -> None:
        cur = con.cursor()  # same database, its own connection
        try:
            cur.execute(_ev_sql(source(parts[i]), f"TABLE {names[i]}"))
        finally:
            cur.close()

    try:
        with ThreadPoolExecutor(max_workers=min(_threads(), len(parts))) as pool:
            list(pool.map(parse, range(len(parts))))
        con.execute(f"CREATE TEMP TABLE ev AS SELECT * FROM {names[0]}")
        for name in names[1:]:
            con.execute(f"INSERT INTO ev SELECT * FROM {name}")
    finally:
        for name in names:
            con.execute(f"DROP TABLE IF EXISTS {name}")


_PART_IDS = itertools.count()


def _sql_text(path: Path) -> str:
    return str(path).replace("'", "''")


def _decompressed_size(raw: Any, gz: bool) -> int:
    """The file's size once decompressed: exact for plain files, the gzip trailer's
    (modulo 4 GiB) for gzip; only used to place the cuts."""
    raw.seek(0, 2)
    size = int(raw.tell())
    if gz and size >= 4:
        raw.seek(-4, 2)
        size = int.from_bytes(raw.read(4), "little")
    raw.seek(0)
    return size


def _copy_array(path: Path, parts: list[Path]) -> dict[str, Any] | None:
    """Write the ``traceEvents`` array's text to temporary files, each a JSON array
    of whole events (appended to ``parts`` as they are created: one per DuckDB
    thread, at most :data:`_PART_MAX` bytes each where events allow); return the
    document with the array left empty (its header keys), or None where that
    cannot be done."""
    with path.open("rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        total = _decompressed_size(raw, gz)
        src: Any = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        # The key: the first match whose preceding text is the start of an object.
        buf = b""
        head: bytes | None = None
        while head is None:
            chunk = src.read(_CHUNK)
            if not chunk:
                return None
            buf += chunk
            for m in _KEY.finditer(buf):
                try:
                    if isinstance(json.loads(buf[: m.end() - 1] + b"[]}"), dict):
                        head = buf[: m.end() - 1]
                        break
                except ValueError:
                    continue
            if head is None and len(buf) > _HEAD_LIMIT:
                return None
        array = total - len(head)
        n_parts = _parts_for(array)
        step = array // n_parts if n_parts > 1 else array + 1
        out = _new_part(parts)
        try:
            chunk = buf[len(head) :]
            del buf
            done = 0  # array bytes before this chunk
            while chunk:
                # Cut once the part has its share, and never near the end (the
                # array's closing bracket and the keys after it stay in the last part).
                want = step * len(parts)
                if len(parts) < n_parts and done + len(chunk) > want and want < array - _PART_MIN:
                    cut = _cut_at(chunk, max(0, want - done))
                    if cut is not None:
                        out.write(chunk[: cut.start() + 1])
                        out.write(b"]")
                        out.close()
                        out = _new_part(parts)
                        out.write(b"[")
                        done += cut.end() - 1
                        chunk = chunk[cut.end() - 1 :]
                        continue
                out.write(chunk)
                done += len(chunk)
                chunk = src.read(_CHUNK)
            out.flush()
            size = out.tell()
            first = len(parts) == 1
            # The closing bracket: read a growing window of the end of the copy.
            span = _TAIL_FIRST
            while True:
                start = max(0, size - span)
                out.seek(start)
                window = out.read(size - start)
                close = _closing_bracket(window, whole=first and start == 0)
                if close is not None:
                    break
                if start == 0 or span >= _TAIL_LIMIT:
                    return None
                span *= 8
            doc = json.loads(head + b"[]" + window[close + 1 :])
            if not isinstance(doc, dict):
                return None
            out.truncate(start + close + 1)
        finally:
            out.close()
    return doc


def _cut_at(chunk: bytes, pos: int) -> re.Match[bytes] | None:
    """The first boundary between two events at or after ``pos`` (see :data:`_CUT`)."""
    for m in _CUT.finditer(chunk, pos):
        if b"\n" in m.group():
            return m
    return None


def _new_part(parts: list[Path]) -> Any:
    fd, name = tempfile.mkstemp(prefix="tracekit-kineto-", suffix=".json")
    parts.append(Path(name))
    return os.fdopen(fd, "w+b")


def _closing_bracket(window: bytes, whole: bool) -> int | None:
    """The position in ``window`` (the end of the array text and what follows it;
    ``whole``: from the array's own ``[``) of the ``]`` that closes the array.

    That is the earliest ``]`` after which the text ends the top-level object
    (``, "key": value ... }``) and before which the array's last element is an
    object (or the array is empty).  Any ``]`` inside the events is followed by
    more than that; a later one, closing a header list that comes after the
    array, can pass the test too, hence the earliest.
    """
    # latin-1 maps byte i to character i, so positions agree with the bytes; JSON's
    # structure is ASCII, and the tail is decoded properly once it has been found.
    text = window.decode("latin-1")
    if not text.rstrip(" \t\n\r").endswith("}"):
        return None  # truncated, or not an object
    dec = json.JSONDecoder()
    best = None
    pos = len(text)
    while (pos := text.rfind("]", 0, pos)) >= 0:
        j = pos - 1
        while j >= 0 and text[j] in " \t\n\r":
            j -= 1
        last = text[j] if j >= 0 else ""
        if (last == "}" or (whole and last == "[" and j == 0)) and _ends_object(text, pos + 1, dec):
            best = pos
    return best


def _ends_object(text: str, i: int, dec: json.JSONDecoder) -> bool:
    """Whether ``text[i:]`` is ``(, "key": value)* }`` with optional whitespace."""
    n = len(text)
    i = _WS.match(text, i).end()  # type: ignore[union-attr]
    while i < n and text[i] == ",":
        i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
        if i >= n or text[i] != '"':
            return False
        try:
            key, i = dec.raw_decode(text, i)
            if key == "traceEvents":  # a second list: let the whole-document parse decide
                return False
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if text[i : i + 1] != ":":
                return False
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
            _, i = dec.raw_decode(text, i)
        except ValueError:
            return False
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
    return text[i : i + 1] == "}" and _WS.match(text, i + 1).end() == n  # type: ignore[union-attr]


def _load_document(
    con: duckdb.DuckDBPyConnection, path: Path, parsing: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """The slow path: DuckDB parses the whole file as one JSON document."""
    cols = {"traceEvents": f"{_EVENT}[]", **_HEADER}
    spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in cols.items()) + "}"
    limit = _object_limit(path)
    parsing()
    try:
        con.execute(
            f"CREATE TEMP TABLE raw AS SELECT * FROM read_json($path, columns={spec}, "
            f"format='auto', maximum_object_size={limit})",
            {"path": str(path)},
        )
    except (duckdb.Error, OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise TracekitError(f"{path} could not be read as JSON: {_why(exc)}.") from None
    n, has_events = con.execute("SELECT count(*), count(traceEvents) FROM raw").fetchall()[0]
    if n != 1 or has_events != 1:
        raise TracekitError(
            f"{path} is JSON but not a Kineto trace (no top-level 'traceEvents' list)."
        )
    names = list(_HEADER)
    quoted = ", ".join('"' + k + '"' for k in names)
    row = con.execute(f"SELECT {quoted} FROM raw").fetchall()[0]
    header: dict[str, Any] = {}
    for k, v in zip(names, row, strict=True):
        if v is not None and _HEADER[k] == "JSON":
            v = json.loads(v)
        header[k] = v
    con.execute(_ev_sql("(SELECT unnest(traceEvents) AS e FROM raw)"))
    con.execute("DROP TABLE raw")
    return header


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    if "gzip" in low or "end of data" in low or "unexpected end" in low:
        return f"the file is truncated or corrupt ({text.rstrip('.')})"
    if "malformed json" in low or "unexpected character" in low:
        return f"it is not valid JSON ({text.rstrip('.')})"
    return text.rstrip(".")


# --- events ----------------------------------------------------------------------


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
