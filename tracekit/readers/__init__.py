"""Readers: one per source format, each ``read(path) -> RawTrace``.

The contract every reader follows (attribution and storage rely on nothing else):

``RawTrace.table`` is a ``pyarrow.Table`` with one row per event and the *raw*
columns of :mod:`tracekit.schema`:

- required: ``pid`` (int64), ``kind`` (str, one of schema.KINDS), ``name`` (str),
  ``start_ns``/``end_ns`` (int64 ns; one clock for the whole file);
- optional: ``rank`` (int32; the reader assigns it per process: explicit
  distributed rank where the trace records one, else the order of the process's
  first GPU), ``tid`` (int64; CPU events), ``device`` (int32) and ``stream``
  (int64) for GPU events, ``short_name``, ``correlation`` (int64; the same value on
  a GPU activity and on the runtime call that launched it, within one pid),
  ``domain``, ``payload`` (str), ``graph_id``/``graph_node_id``, ``bytes``,
  ``nested`` (bool; True for ranges that nest properly on their thread, push/pop
  NVTX and record_function; False for start/end NVTX ranges and GPU-side
  annotations, which attribution does not use as a launch stack).

GPU activities carry the pid of the process that launched them and the
correlation of the launching call; runtime calls carry pid, tid and correlation.
No per-event Python loops: build columns with Arrow, NumPy or SQL.

``RawTrace.meta`` is a JSON-able dict: ``format``, ``profiler``,
``profiler_version``, ``source``, ``gpus`` ({device index as str: model}),
``processes`` ([{pid, rank, name}]), ``rank_source`` ("explicit" or "order"),
``world_size`` (int or None), ``warnings`` ([str]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracekit.errors import TracekitError

if TYPE_CHECKING:  # Arrow is imported by the readers; sniffing a name needs none of it
    import pyarrow as pa


@dataclass
class RawTrace:
    table: pa.Table
    meta: dict[str, Any] = field(default_factory=dict)
    #: CUDA graph node creations (nsys ``CUDA_GRAPH_NODE_EVENTS``): ``pid``, ``tid``,
    #: ``start_ns``, ``graph_node_id``, ``original_graph_node_id`` (the captured node
    #: an instantiated node was cloned from).  Attribution gives replayed kernels the
    #: operator that was open when their node was captured.
    graph_nodes: pa.Table | None = None


NSYS_REPORT_SUFFIXES = (".nsys-rep", ".qdrep", ".nsys-rep.gz", ".qdrep.gz")
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db", ".sqlite.gz", ".sqlite3.gz")
KINETO_SUFFIXES = (".json", ".json.gz")


def sniff(path: Path) -> str:
    """Name the format of ``path``: ``nsys-rep``, ``nsys-sqlite`` or ``kineto``.

    >>> sniff(Path("rank0.pt.trace.json.gz"))
    'kineto'
    """
    name = path.name.lower()
    if name.endswith(NSYS_REPORT_SUFFIXES):
        return "nsys-rep"
    if name.endswith(SQLITE_SUFFIXES):
        return "nsys-sqlite"
    if name.endswith(KINETO_SUFFIXES):
        return "kineto"
    if path.is_file():
        with path.open("rb") as fh:
            head = fh.read(16)
        if head.startswith(b"SQLite format 3"):
            return "nsys-sqlite"
        if head.startswith(b"\x1f\x8b") or head.lstrip().startswith(b"{"):
            return "kineto"
    raise TracekitError(
        f"{path} is not a format tracekit reads (expected .nsys-rep, .qdrep, .sqlite, "
        ".json or .json.gz)."
    )


def reader_for(fmt: str) -> Callable[[Path], RawTrace]:
    """Return the ``read`` function of a format named by :func:`sniff`."""
    # Heavy optional imports happen inside the reader module that needs them.
    if fmt in ("nsys-rep", "nsys-sqlite"):
        from tracekit.readers import nsys

        return nsys.read
    if fmt == "kineto":
        from tracekit.readers import kineto

        return kineto.read
    raise TracekitError(f"No reader for format {fmt!r}.")


def read(path: Path) -> RawTrace:
    """Read one trace file of any supported format (gzip-compressed Nsight files too:
    they are unpacked to a temporary file first, since SQLite and nsys need a file).

    >>> read(Path("examples/traces/h200_tp2/h200_tp2_nsys.sqlite.gz")).meta["profiler"]  # doctest: +SKIP
    'nsys'
    """
    fmt = sniff(path)
    read_fn = reader_for(fmt)
    if fmt == "kineto" or not path.name.lower().endswith(".gz"):
        return read_fn(path)
    import gzip
    import shutil
    import tempfile
    import zlib

    with tempfile.TemporaryDirectory(prefix="tracekit-") as tmp:
        plain = Path(tmp) / path.name[: -len(".gz")]
        try:
            with gzip.open(path, "rb") as src, plain.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError, zlib.error) as exc:
            raise TracekitError(f"{path} is not a readable gzip file ({exc}).") from None
        raw = read_fn(plain)
        raw.meta["source"] = str(path)
        return raw
