"""Kineto JSON text to DuckDB: the first half of the Kineto reader.

:func:`load` parses one trace file into the temp table ``ev`` of a connection to
an in-memory DuckDB database shared by the files being read (one row per kept
event, times in integer ns); :mod:`tracekit.readers.kineto` turns ``ev`` into the
raw events table.  This module imports only the standard library at first, and DuckDB
when the first part of a file is ready to be parsed, so the command line can start
decompressing the first files while DuckDB, NumPy and Arrow are still being
imported (:func:`start_early`).
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracekit.cpus import usable_cpus
from tracekit.errors import TracekitError

if TYPE_CHECKING:
    from typing import TypeAlias

    import duckdb

    #: A connection, or a function that returns one (opened when first needed).
    Connection: TypeAlias = duckdb.DuckDBPyConnection | Callable[[], duckdb.DuckDBPyConnection]

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
             -- 2021 GPU rows: tid "stream 7"; no regexp (it was a fifth of the parse)
             coalesce(TRY_CAST(tid AS BIGINT),
                      CASE WHEN starts_with(tid, 'stream ') THEN TRY_CAST(substr(tid, 8) AS BIGINT) END)
               AS rtid,
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


_DB: duckdb.DuckDBPyConnection | None = None
_DB_LOCK = threading.Lock()


def _database() -> duckdb.DuckDBPyConnection:
    """The in-memory DuckDB database that the Kineto files being read share.

    Each :func:`read` takes its own connection to it (a cursor: its temp tables are
    its own), so files read on several threads share one database instead of each
    opening its own (about 30 ms; a cursor costs nothing); the last read to end
    closes it.  Each statement runs on the thread that issued it alone: the
    parallel work is a file's parts (:class:`_PartParser`) and the files read at
    once, and a scan of one JSON array does not split across DuckDB's threads, so
    worker threads of its own would only compete with those (on the 54 MB trace,
    one DuckDB thread instead of two: 0.1-0.25 s less CPU, the same wall time).
    """
    global _DB
    import duckdb  # here, not above: the first files are copied while it imports

    with _DB_LOCK:
        if _DB is None:
            # Freed memory goes back to the OS after each task above a few MB
            # (default: 128 MB), so a read's parse buffers do not stay resident
            # through attribution.
            _DB = duckdb.connect(
                config={
                    "threads": 1,
                    "allocator_flush_threshold": "8MB",
                    "allocator_bulk_deallocation_flush_threshold": "8MB",
                }
            )
        return _DB


def _threads() -> int:
    return max(1, min(usable_cpus(), 8))


_FILES_AT_ONCE = 1
_READS_LEFT = 0  # reads announced by expect_files and not yet ended


def expect_files(at_once: int, total: int = 0) -> None:
    """Say how many files will be read at once (on as many threads), and how many
    in all: the database then stays open between them (opening and closing it
    costs 30-60 ms of CPU) until the last has been read or :func:`expect_none`."""
    global _FILES_AT_ONCE, _READS_LEFT
    with _DB_LOCK:
        _FILES_AT_ONCE = max(1, at_once)
        _READS_LEFT = max(0, total)


def expect_none() -> None:
    """No more reads are coming (an ingest ended, perhaps early): close the
    database once no read is under way."""
    global _READS_LEFT, _FILES_AT_ONCE
    with _DB_LOCK:
        _READS_LEFT = 0
        _FILES_AT_ONCE = 1
    _close_if_idle()


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


def _close(con: duckdb.DuckDBPyConnection | None, read: bool = False) -> None:
    """End one file's connection (``read``: and its read); the last read to end
    closes the database, which hands what DuckDB still holds (70 MB after a 54 MB
    trace) back to the OS before attribution."""
    global _ACTIVE, _READS_LEFT
    if con is not None:
        con.close()
    with _DB_LOCK:
        _ACTIVE -= 1
        if read:
            _READS_LEFT = max(0, _READS_LEFT - 1)
    _close_if_idle()


def _close_if_idle() -> None:
    global _DB
    with _DB_LOCK:
        if _ACTIVE == 0 and _READS_LEFT == 0 and _DB is not None:
            _DB.close()
            _DB = None


def _parts_for(array: int) -> int:
    """How many parts an array of ``array`` bytes is cut into: enough to keep each
    under :func:`_part_max`, and enough to give every thread of the part pool
    (:func:`_threads`) one while fewer files than threads are being read (several
    files read at once already keep the threads busy, and each part costs CPU)."""
    if array < _PART_MIN * 2:
        return 1
    with _DB_LOCK:
        # The files read now, or about to be: the others of this batch start as
        # soon as a worker is free.
        busy = max(_ACTIVE, min(_FILES_AT_ONCE, _READS_LEFT))
    idle = -(-_threads() // max(1, busy))
    return max(1, idle, -(-array // _part_max()))


def _part_max() -> int:
    """The largest part: :data:`_PART_MAX`, or :data:`_PART_MAX_SHARED` while files
    are read several at once (one part per file then saves a statement and the
    copy that joins the parts, 15-20 ms per 10 MB file)."""
    return _PART_MAX_SHARED if _FILES_AT_ONCE > 1 else _PART_MAX


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


def _getter(con: Connection) -> Callable[[], duckdb.DuckDBPyConnection]:
    return con if callable(con) else (lambda: con)


class _Lazy:
    """A connection to the shared database opened on first use (by one thread of
    the several that may ask at once): a file is copied before DuckDB is needed,
    even imported."""

    def __init__(self) -> None:
        self.con: duckdb.DuckDBPyConnection | None = None
        self.lock = threading.Lock()

    def get(self) -> duckdb.DuckDBPyConnection:
        with self.lock:
            if self.con is None:
                con = _open()
                # No progress bar on stderr: a reader is called from the CLI and tests.
                con.execute("SET enable_progress_bar = false")
                self.con = con
            return self.con


def _load(con: Connection, path: Path, parsing: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Parse the file into temp table ``ev`` (one row per event) and return the header.

    The ``traceEvents`` array is copied out of the document and read on its own
    (:func:`_load_array`); a file that this cannot handle is parsed whole
    (:func:`_load_document`), which also gives every error its message.
    ``parsing`` is called as DuckDB starts to parse.
    """
    header = _load_array(con, path, parsing)
    if header is None:
        header = _load_document(_getter(con)(), path, parsing)
    return header


# The fast path.  DuckDB reads one JSON document (an object of any size) on one
# thread at ~30 MB/s, but a top-level array of small objects about seven times as
# fast, and several such files on several threads at once.  So the text of the
# ``traceEvents`` array, from its ``[`` to its matching ``]``, goes to temporary
# files (decompressed on the way, in chunks), cut into one part per DuckDB thread
# between two events, and the header keys before and after it are parsed with
# ``json``.
_CHUNK = 4 << 20  # decompressed bytes per step: few steps, each without the GIL
#: How far into the (decompressed) file the ``traceEvents`` key is looked for.
_HEAD_LIMIT = 64 << 20
#: The end of the file searched for the array's closing bracket, first and at most.
_TAIL_FIRST, _TAIL_LIMIT = 256 << 10, 16 << 20
#: Arrays shorter than twice this are not cut; no cut within this much of the end.
_PART_MIN = 4 << 20
#: The largest part: DuckDB holds a part whole while it parses it (on each thread),
#: and each part costs CPU of its own (the 54 MB trace in 7 parts: 1.0-1.2 s of CPU
#: for the parse, in one part 0.85 s, in 4 parts 0.96-1.05 s).
_PART_MAX = 16 << 20
#: The largest part while several files are read at once (:func:`_part_max`).
_PART_MAX_SHARED = 24 << 20
_KEY = re.compile(rb'"traceEvents"[ \t\n\r]*:[ \t\n\r]*\[')
_WS = re.compile(r"[ \t\n\r]*")
# Where one event ends and the next begins: ``}``, a comma, ``{``, with a line break
# in the whitespace (as every profiler writes its events).  JSON strings cannot hold
# a raw line break, so this is never inside a string; where it is between two
# objects of a nested list instead, the parts are not valid arrays, DuckDB says so,
# and the file is read the slow way.
_CUT = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")


def _load_array(
    con: Connection, path: Path, parsing: Callable[[], None] = lambda: None
) -> dict[str, Any] | None:
    """Fill ``ev`` from the ``traceEvents`` array alone; None where the file has
    another shape, is damaged, or DuckDB refuses the array (the caller then parses
    the whole document, and reports what is wrong with it)."""
    parts: list[Path] = []
    parser = _PartParser(con, parts)
    try:
        doc = _copy_array(path, parts, parser.ready)
        if doc is None:
            return None
        parsing()
        try:
            parser.finish()
        except Exception as exc:
            import duckdb  # imported by now: finish parsed

            if not isinstance(exc, duckdb.Error):
                raise
            parser.con.execute("DROP TABLE IF EXISTS ev")
            return None
    except (OSError, EOFError, zlib.error, ValueError, RecursionError):
        return None
    finally:
        parser.close()  # before the parts go: a parse may still be reading one
        for part in parts:
            part.unlink(missing_ok=True)
    header: dict[str, Any] = {}
    for k, typ in _HEADER.items():
        v = doc.get(k)
        if v is not None and typ == "VARCHAR" and not isinstance(v, str):
            v = json.dumps(v, separators=(",", ":"))  # as DuckDB casts JSON to text
        header[k] = v
    return header


class _PartParser:
    """Parses the array's parts into ``ev``, in file order, each part as soon as
    :func:`_copy_array` has finished writing it.

    While the rest of the file is still being decompressed and copied, finished
    parts are parsed on a pool of :func:`_threads` threads, each by a connection
    of its own into a table of the shared database; :meth:`finish` parses the
    last part and makes ``ev`` of the tables in part order: DuckDB keeps the order
    of rows within one scan and through UNION ALL, not across the files of a
    multi-file scan, and the order of events decides ties downstream (ranges with
    equal times).
    An array that is one part is parsed straight into ``ev``.
    """

    _SPEC = "{" + ", ".join(f"'{k}': '{v}'" for k, v in _EVENT_FIELDS.items()) + "}"

    def __init__(self, con: Connection, parts: list[Path]) -> None:
        self._con = _getter(con)
        self.parts = parts
        self.token = f"tk_part_{os.getpid()}_{threading.get_ident()}_{next(_PART_IDS)}"
        self.pool: ThreadPoolExecutor | None = None
        self.futures: list[Future[None]] = []

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        return self._con()

    @classmethod
    def source(cls, part: Path) -> str:
        return f"read_json('{_sql_text(part)}', columns={cls._SPEC}, format='array', records='true') AS e"

    def _name(self, i: int) -> str:
        return f"{self.token}_{i}"

    def _parse(self, i: int) -> None:
        cur = self.con.cursor()  # same database, its own connection
        try:
            cur.execute(_ev_sql(self.source(self.parts[i]), f"TABLE {self._name(i)}"))
        finally:
            cur.close()

    def ready(self) -> None:
        """Every part but the last is finished: parse those not yet started."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="tracekit-part")
        for i in range(len(self.futures), len(self.parts) - 1):
            self.futures.append(self.pool.submit(self._parse, i))

    def finish(self) -> None:
        """All parts are written: parse what is left and fill ``ev``."""
        if len(self.parts) == 1 and not self.futures:
            self.con.execute(_ev_sql(self.source(self.parts[0])))
            return
        self.ready()
        self._parse(len(self.parts) - 1)
        for f in self.futures:
            f.result()  # the first error, if any
        # One statement: UNION ALL keeps the order of its inputs (DuckDB's order
        # preservation), and copies the rows once, at half the cost of an INSERT each.
        union = " UNION ALL ".join(f"SELECT * FROM {self._name(i)}" for i in range(len(self.parts)))
        self.con.execute(f"CREATE TEMP TABLE ev AS {union}")

    def close(self) -> None:
        """Wait for the parses still running, and drop the parts' tables."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            for i in range(len(self.futures) + 1):
                self.con.execute(f"DROP TABLE IF EXISTS {self._name(i)}")


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


def _copy_array(
    path: Path, parts: list[Path], ready: Callable[[], None] = lambda: None
) -> dict[str, Any] | None:
    """Write the ``traceEvents`` array's text to temporary files, each a JSON array
    of whole events (appended to ``parts`` as they are created: one per DuckDB
    thread, at most :func:`_part_max` bytes each where events allow), calling
    ``ready`` each time one is finished and the next begun; return the document
    with the array left empty (its header keys), or None where that cannot be
    done."""
    with path.open("rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        total = _decompressed_size(raw, gz)
        src: Any = _Gunzip(raw) if gz else raw
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
                        ready()
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


class _Gunzip:
    """A gzip file's members, decompressed in large steps.

    ``gzip.GzipFile`` reads 8 kB at a time and takes the GIL for each step, so a
    thread copying a file while another imports modules (which holds the GIL)
    crawled: 54 MB took 6 s next to a busy thread, against 0.7 s here, where each
    step inflates up to ``n`` bytes in one zlib call without the GIL.  zlib checks
    each member's CRC and length; a file cut short raises EOFError, as GzipFile does.
    """

    _BLOCK = 1 << 18  # compressed bytes read at a time

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.z = zlib.decompressobj(wbits=31)
        self.pending = b""  # compressed bytes not yet given to zlib

    def read(self, n: int) -> bytes:
        while True:
            if self.z.unconsumed_tail:
                data = self.z.unconsumed_tail
            else:
                data = self.pending or self.raw.read(self._BLOCK)
                self.pending = b""
            if not data:
                if not self.z.eof:
                    raise EOFError("Compressed file ended before the end-of-stream marker was reached")
                return b""
            out = self.z.decompress(data, n)
            if self.z.eof:  # the member ended: another may follow
                self.pending = self.z.unused_data
                if not self.pending:
                    self.pending = self.raw.read(self._BLOCK)
                if self.pending:
                    self.z = zlib.decompressobj(wbits=31)
            if out:
                return out


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
    import duckdb

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


# --- one file's parse, and parses started early --------------------------------------


def load(
    path: Path, parsing: Callable[[], None] = lambda: None
) -> tuple[duckdb.DuckDBPyConnection, dict[str, Any]]:
    """Parse ``path`` into temp table ``ev`` of a new connection to the shared
    database; return that connection, which the caller ends with :func:`close`, and
    the document's header keys.  A parse of ``path`` that :func:`start_early` began
    is taken over instead of started again.

    ``parsing`` is called as DuckDB starts to parse (not for a parse started early).
    """
    early = _take_early(path)
    if early is not None:
        return early.result()
    return _load_new(path, parsing)


def _load_new(
    path: Path, parsing: Callable[[], None] = lambda: None
) -> tuple[duckdb.DuckDBPyConnection, dict[str, Any]]:
    _check_file(path)
    lazy = _Lazy()
    try:
        header = _load(lazy.get, path, parsing)
        return lazy.get(), header
    except BaseException:
        if lazy.con is not None:
            _close(lazy.con)
        raise


def close(con: duckdb.DuckDBPyConnection) -> None:
    """End the read that :func:`load` began."""
    _close(con, read=True)


class _Early:
    """One file's :func:`load`, running on a thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = threading.Event()
        self.value: tuple[duckdb.DuckDBPyConnection, dict[str, Any]] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = _load_new(self.path)
        except BaseException as exc:  # handed to the reader that takes this over
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> tuple[duckdb.DuckDBPyConnection, dict[str, Any]]:
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


_EARLY: dict[str, _Early] = {}


def _key(path: Path) -> str:
    return os.path.abspath(path)


def start_early(files: list[Path], n: int) -> None:
    """Start parsing the first ``n`` Kineto files of ``files``, each on a thread of
    its own, for :func:`load` to take over.

    For a process that has yet to import DuckDB, NumPy and Arrow (the ``tracekit
    ingest`` command).  The threads decompress and copy (zlib runs without the
    GIL) while this thread imports DuckDB, which the parses need first; the
    caller then imports NumPy and Arrow while DuckDB parses, also without the GIL.
    Every file started must then be read: a parse nobody takes over keeps its
    connection, and so the database, open.
    """
    kineto = [f for f in files if f.name.lower().endswith((".json", ".json.gz"))]
    expect_files(n, len(kineto))
    for f in files[: max(0, n)]:
        if not f.name.lower().endswith((".json", ".json.gz")):
            continue
        early = _Early(f)
        with _DB_LOCK:
            if _key(f) in _EARLY:
                continue
            _EARLY[_key(f)] = early
        threading.Thread(target=early.run, name="tracekit-parse", daemon=True).start()
    # Imports hold the GIL, so they run one after another whatever the thread: this
    # one first, so that the parses can start as soon as the copies are written
    # (on the 4-rank example, the first two files were read 0.15-0.2 s sooner).
    importlib.import_module("duckdb")


def _take_early(path: Path) -> _Early | None:
    with _DB_LOCK:
        return _EARLY.pop(_key(path), None)


def drain_early() -> None:
    """Wait for the parses started early that no read took over (an ingest that
    failed before reading them) and end them: their temporary files are removed,
    and the database closes."""
    with _DB_LOCK:
        left = list(_EARLY.values())
        _EARLY.clear()
    for early in left:
        early.done.wait()
        if early.value is not None:
            _close(early.value[0])
    expect_none()
