"""``tracekit ingest``: trace files in, one attributed, self-describing Parquet out.

Each input file is read, classified and attributed on its own (in a worker
process when there are several), so memory is bounded by one file; the parts are
then streamed into the output file, which appears only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit import __version__
from tracekit.attribute import (
    PAYLOAD_MARKER,
    Attribution,
    CaptureOps,
    Launches,
    Markers,
    RangeIndex,
    attribute,
    base_names,
    dense_codes,
    gpu_phase_step,
    marker_updates,
)
from tracekit.attribute import (
    label as label_rows,
)
from tracekit.busy import busy_columns
from tracekit.classify import classify
from tracekit.cpus import usable_cpus
from tracekit.errors import TracekitError
from tracekit.exposed import exposed_column
from tracekit.inputs import expand_inputs, run_label
from tracekit.launches import launch_first_column
from tracekit.phasemap import PhaseMap, choose
from tracekit.readers import read, sniff
from tracekit.schema import GPU_KINDS, SCHEMA, SCHEMA_VERSION, conform
from tracekit.streamed import StreamedColumns

META_KEY = b"tracekit"
ROW_GROUP = 1 << 20

#: progress(stage, file_index, n_files, path): stage is read/attribute/write/done.
Progress = Callable[[str, int, int, Path], None]


@dataclass
class FileResult:
    """What ingesting one input file produced (summed into the run's metadata)."""

    path: str
    format: str
    meta: dict[str, Any]
    part: str
    rows: int
    kernels: int
    gpu_activities: int
    ranges: int
    ranks: list[int]
    phase_map: dict[str, Any]
    step_mode: str
    kernel_ns: int
    phased_ns: int
    op_ns: int
    seconds: float


@dataclass
class IngestResult:
    out: Path
    run: str
    rows: int
    kernels: int
    ranks: list[int]
    gpus: dict[str, str]
    coverage_phase: float | None
    coverage_op: float | None
    seconds: float
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def _with_columns(table: pa.Table, cols: pa.Table) -> pa.Table:
    for name in cols.column_names:
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, cols.column(name))
        else:
            table = table.append_column(name, cols.column(name))
    return table


def _sum_kernel_ns(table: pa.Table, mask: pa.Array) -> int:
    s = pc.sum(pc.filter(table.column("dur_ns"), mask)).as_py()
    return int(s or 0)


def _run_column(run: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.repeat(pa.scalar(0, pa.int32()), n), pa.array([run], pa.string())
    )


def _with_dur(table: pa.Table) -> pa.Table:
    if "dur_ns" not in table.column_names:
        table = table.append_column(
            "dur_ns", pc.subtract(table.column("end_ns"), table.column("start_ns"))
        )
    return table


def _classes(table: pa.Table) -> pa.Table:
    short = table.column("short_name") if "short_name" in table.column_names else None
    return classify(table.column("name"), table.column("kind"), short)


def _classified(table: pa.Table) -> pa.Table:
    table = _with_dur(table)
    return _with_columns(table, _classes(table))


def _attributed(table: pa.Table, pm: PhaseMap, graph_nodes: pa.Table | None) -> Attribution:
    """:func:`classify` and :func:`attribute` on one whole table, side by side: they
    read different columns, and both spend most of their time in Arrow and NumPy
    without the GIL (the 54 MB trace, read alone: 0.12 s side by side, against
    0.17 s one after the other)."""
    table = _with_dur(table)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracekit-classify") as pool:
        classes = pool.submit(_classes, table)
        result = attribute(table, pm, graph_nodes)
        cls = classes.result()
    if result.kept is not None:
        cls = cls.filter(result.kept)
    result.table = _with_columns(result.table, cls)
    return result


@dataclass
class _Stats:
    """Counts and coverage sums over the batches of one input."""

    rows: int = 0
    kernels: int = 0
    gpu_activities: int = 0
    ranges: int = 0
    kernel_ns: int = 0
    phased_ns: int = 0
    op_ns: int = 0
    ranks: set[int] = field(default_factory=set)

    def add(self, table: pa.Table) -> None:
        kinds = table.column("kind")
        is_kernel = pc.equal(kinds, "kernel")
        self.rows += table.num_rows
        self.kernels += int(pc.sum(is_kernel).as_py() or 0)
        self.gpu_activities += int(pc.sum(pc.is_in(kinds, pa.array(list(GPU_KINDS)))).as_py() or 0)
        self.ranges += int(pc.sum(pc.equal(kinds, "range")).as_py() or 0)
        self.kernel_ns += _sum_kernel_ns(table, is_kernel)
        self.phased_ns += _sum_kernel_ns(table, pc.and_(is_kernel, pc.is_valid(table.column("phase"))))
        self.op_ns += _sum_kernel_ns(table, pc.and_(is_kernel, pc.is_valid(table.column("op"))))
        self.ranks |= {r for r in pc.unique(table.column("rank")).to_pylist() if r is not None}

    def result(
        self, path: Path, fmt: str, meta: dict[str, Any], pm: dict[str, Any], step_mode: str, t0: float
    ) -> FileResult:
        return FileResult(
            path=str(path),
            format=fmt,
            meta=meta,
            part="",
            rows=self.rows,
            kernels=self.kernels,
            gpu_activities=self.gpu_activities,
            ranges=self.ranges,
            ranks=sorted(self.ranks),
            phase_map=pm,
            step_mode=step_mode,
            kernel_ns=self.kernel_ns,
            phased_ns=self.phased_ns,
            op_ns=self.op_ns,
            seconds=time.perf_counter() - t0,
        )


def process_file(path: Path, phase_map: str, run: str) -> tuple[FileResult, pa.Table]:
    """Read, classify and attribute one whole file: its summary and its events table
    (Kineto files; Nsight exports stream through :func:`process_into` instead)."""
    t0 = time.perf_counter()
    fmt = sniff(path)
    raw = read(path)
    _trim()  # the parse buffers (DuckDB, glibc arenas of its threads) before attribution
    table = raw.table
    kinds = table.column("kind")
    range_names = pc.unique(
        base_names(pc.unique(pc.filter(table.column("name"), pc.equal(kinds, "range"))))
    ).to_pylist()
    pm = choose(phase_map, [n for n in range_names if n])
    result = _attributed(table, pm, raw.graph_nodes)
    del table, raw.table
    table = result.table
    table = _with_columns(table, pa.table(busy_columns(table)))
    table = _with_columns(
        table,
        pa.table({"exposed_ns": exposed_column(table), "launch_first": launch_first_column(table)}),
    )
    if "run" in table.column_names:
        table = table.drop_columns(["run"])
    table = table.append_column("run", _run_column(run, table.num_rows))
    # Rows keep the reader's order (grouped by kind); nothing depends on row order,
    # and a sort would copy every column of the largest table once more.
    table = conform(table)
    stats = _Stats()
    stats.add(table)
    return stats.result(path, fmt, raw.meta, pm.to_json(), result.step_mode, t0), table


def _stream_nsys(path: Path, fmt: str, write: Callable[[pa.Table], object], phase_map: str, run: str) -> FileResult:
    """Nsight export -> attributed batches, with memory bounded by the narrow
    attribution inputs plus three batches (one read, one labelled, one written): the
    ranges usable as launch stacks are indexed first (:class:`RangeIndex`), busy time,
    exposed communication time and launch flags are computed from narrow columns of
    every GPU activity (:class:`StreamedColumns`, 17 bytes kept per activity), then
    every table streams through in rowid windows, is labelled, and is written."""
    from tracekit.readers import nsys

    t0 = time.perf_counter()
    with (
        nsys.open_export(path) as ex,
        ThreadPoolExecutor(max_workers=2) as pool,
        ThreadPoolExecutor(max_workers=1) as reader,
        ThreadPoolExecutor(max_workers=1) as writer,
    ):
        # The NVTX ranges, the launching calls and the per-process GPU groups (ranks)
        # are read at once, each on its own SQLite connection.
        f_ranges = pool.submit(ex.stack_ranges)

        def calls_and_nodes() -> tuple[dict[str, np.ndarray], pa.Table | None, tuple[np.ndarray, np.ndarray]]:
            ex.rank_info()
            calls = ex.launch_calls()
            nodes = ex.graph_nodes()
            replayed = ex.replayed_nodes() if nodes is not None and nodes.num_rows else (np.zeros(0), np.zeros(0))
            return calls, nodes, replayed

        f_calls = pool.submit(calls_and_nodes)
        # Futures keep their results alive: take them and drop the futures, and pop
        # the arrays into the index, which frees each once it is folded into keys.
        sr = f_ranges.result()
        lc, graph_nodes, (gpid, gnode) = f_calls.result()
        del f_ranges, f_calls
        pm = choose(phase_map, sorted(sr["all_names"]))
        index: RangeIndex | None = None
        if len(sr["pid"]):
            rank = ex.rank_array(sr["pid"])
            markers = Markers(sr.pop("marker_pid"), sr.pop("marker_tid"), sr.pop("marker_time"), sr.pop("marker_text"))
            index = RangeIndex(
                sr.pop("pid"), sr.pop("tid"), sr.pop("start"), sr.pop("end"), rank,
                sr.pop("names"), sr.pop("name_values"), pm, sr.pop("payload_pos"), sr.pop("payload_text"),
                markers,
            )
            del rank
        del sr
        _trim()
        launches = Launches(lc["pid"], lc["corr"], lc["tid"], lc["start"]) if len(lc["pid"]) else None
        del lc
        capture: CaptureOps | None = None
        if index is not None and graph_nodes is not None and len(gpid):
            capture = CaptureOps(gpid, gnode, graph_nodes, index)
        m_rows, m_json = (
            marker_updates(index) if index is not None else (np.zeros(0, np.int64), [])
        )
        # Busy time, exposed time and launch flags need every GPU activity of the file
        # before the first batch: the narrow GPU columns read for the ranks, labelled
        # and classified as the batches will be.
        sp = ex.gpu_spans()
        is_comm, is_compute = _comm_kernels(sp.name, [(k, rows) for k, rows, _ in sp.kinds], ex.strings.decode)
        busy = StreamedColumns(
            [(k, rows) for k, rows, _ in sp.kinds], sp.start, sp.end, sp.pid, sp.device, sp.corr,
            is_comm, is_compute,
            ex.rank_array, lambda pid, corr: gpu_phase_step(index, launches, pid, corr), nsys.NULL_INT,
        )
        del sp, is_comm, is_compute
        ex.drop_gpu_spans()
        _trim()
        # A three-stage pipeline: the next batch is read (SQLite) and the previous one
        # written (Parquet) while this one is labelled; at most three batches live.
        stats = _Stats()
        batches = ex.batches()
        reading = reader.submit(next, batches, None)
        writing = None
        while (batch := reading.result()) is not None:
            reading = reader.submit(next, batches, None)
            table = _label_batch(batch, index, launches, capture, m_rows, m_json, run, busy)
            del batch
            stats.add(table)
            if writing is not None:
                writing.result()
            writing = writer.submit(write, table)
            del table
        if writing is not None:
            writing.result()
        busy.finish()
        meta = ex.meta()
    step_mode = index.step_mode if index is not None else "phase"
    return stats.result(path, fmt, meta, pm.to_json(), step_mode, t0)


def _comm_kernels(
    name_ids: np.ndarray, kinds: list[tuple[str, int]], decode: Callable[[pa.Array], pa.Array]
) -> tuple[np.ndarray, np.ndarray]:
    """(communication kernel, other kernel) masks of the narrow GPU rows (``kinds``:
    (kind, rows) runs), from their name ids: the distinct names are decoded and
    classified as the batches' rows will be (a name that does not decode is NULL,
    hence not communication)."""
    is_kernel = np.zeros(len(name_ids), bool)
    at = 0
    for kind, rows in kinds:
        is_kernel[at : at + rows] = kind == "kernel"
        at += rows
    ids, code = dense_codes(name_ids[is_kernel] + 1)  # -1 (NULL) becomes 0
    ids -= 1
    category = classify(decode(pa.array(ids, pa.int64(), mask=ids < 0)), "kernel").column("category")
    comm = np.asarray(pc.fill_null(pc.equal(category, "communication"), False).to_numpy(zero_copy_only=False), bool)
    is_comm = np.zeros(len(name_ids), bool)
    is_comm[is_kernel] = comm[code]
    return is_comm, is_kernel & ~is_comm


def _trim() -> None:
    """Hand freed memory back to the OS (Arrow's pool and glibc's heap), so the
    streaming phase starts from the index alone, not from the index build's peak."""
    pa.default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _label_batch(
    batch: pa.Table,
    index: RangeIndex | None,
    launches: Launches | None,
    capture: CaptureOps | None,
    marker_rows: np.ndarray,
    marker_json: list[str],
    run: str,
    busy: StreamedColumns,
) -> pa.Table:
    n = batch.num_rows

    def arr(name: str, fill: int) -> np.ndarray:
        if name not in batch.column_names:
            return np.full(n, fill, np.int64)
        col = batch.column(name)
        return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False), np.int64)

    table = _classified(batch)
    range_pos = arr("range_pos", -1)
    out = label_rows(
        index, launches, capture, kind=table.column("kind"), pid=arr("pid", 0), tid=arr("tid", -1),
        start=arr("start_ns", 0), corr=arr("correlation", -1), range_pos=range_pos,
        graph_node=arr("graph_node_id", -1),
    )
    table = _with_columns(table, pa.table(out))
    table = _with_columns(table, pa.table(busy.columns(table.column("kind"))))
    if "range_pos" in table.column_names:
        if len(marker_rows):
            # Payload markers set the payload of the range around them; they are dropped.
            hit = np.isin(range_pos, marker_rows)
            if hit.any():
                vals = pa.array(marker_json, pa.string()).take(
                    pa.array(np.searchsorted(marker_rows, range_pos[hit]))
                )
                i = table.column_names.index("payload")
                table = table.set_column(
                    i, "payload", pc.replace_with_mask(table.column("payload").combine_chunks(), pa.array(hit), vals)
                )
        is_marker = pc.and_(
            pc.fill_null(pc.starts_with(table.column("name"), PAYLOAD_MARKER), False),
            pc.equal(table.column("start_ns"), table.column("end_ns")),
        )
        if pc.any(is_marker).as_py():
            table = table.filter(pc.invert(is_marker))
    table = _with_columns(table, pa.table({"run": _run_column(run, table.num_rows)}))
    return conform(table)


def process_into(path: Path, write: Callable[[pa.Table], object], phase_map: str, run: str) -> FileResult:
    """Read, classify and attribute one file, handing its events to ``write`` (in
    batches for Nsight exports, whole for Kineto files)."""
    fmt = sniff(path)
    if fmt in ("nsys-sqlite", "nsys-rep"):
        return _stream_nsys(path, fmt, write, phase_map, run)
    summary, table = process_file(path, phase_map, run)
    write(table)
    return summary


#: String columns kept dictionary-encoded on their way to Parquet (they repeat).
_DICT_COLUMNS = ("run", "path", "op", "phase")
WRITE_SCHEMA = pa.schema(
    [
        pa.field(f.name, pa.dictionary(pa.int32(), pa.string())) if f.name in _DICT_COLUMNS else f
        for f in SCHEMA
    ]
)


def _for_writing(table: pa.Table) -> pa.Table:
    """One fixed Arrow schema for every batch a writer sees."""
    cols = []
    for f in WRITE_SCHEMA:
        col = table.column(f.name)
        if col.type != f.type:
            if pa.types.is_dictionary(f.type):
                col = pc.dictionary_encode(col.cast(pa.string())).cast(f.type)
            else:
                col = col.cast(f.type)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=WRITE_SCHEMA)


#: Columns Parquet dictionary-encodes (they repeat); times, ids and durations are
#: near-unique, and trying a dictionary on them first only costs time and size.
_PARQUET_DICT = [
    "run", "rank", "pid", "tid", "device", "stream", "kind", "name", "short_name", "depth",
    "category", "collective", "phase", "step", "op", "path", "domain", "payload", "batch_size",
    "tokens", "layer", "graph_id", "reduce_op", "dtype", "algorithm", "protocol", "launch_tid",
]
#: Columns with min/max statistics: what queries filter on and DuckDB prunes by.
#: (On busy_ns, step_busy_ns and launch_first, the null counts let the queries'
#: fallback for runs without them skip every row group of a run that has them;
#: exposed_ns is NULL on every compute kernel, so its null counts could not.)
_PARQUET_STATS = [
    "run", "rank", "kind", "start_ns", "end_ns", "device", "phase", "step", "category",
    "busy_ns", "step_busy_ns", "launch_first",
]


class RunWriter:
    """Parquet output written batch by batch; the run metadata is added at close."""

    def __init__(self, path: Path | str):
        self.path = path
        self.writer = pq.ParquetWriter(
            path,
            WRITE_SCHEMA,
            compression="zstd",
            compression_level=1,
            use_dictionary=_PARQUET_DICT,
            write_statistics=_PARQUET_STATS,
            store_schema=False,
        )
        self.row_groups = 0

    def write(self, table: pa.Table) -> range:
        """Write ``table``; return the indices of the row groups it became."""
        first = self.row_groups
        if table.num_rows:
            self.writer.write_table(_for_writing(table), row_group_size=ROW_GROUP)
            self.row_groups += -(-table.num_rows // ROW_GROUP)
        return range(first, self.row_groups)

    def close(self, meta: dict[str, Any] | None = None) -> None:
        if meta is not None:
            self.writer.add_key_value_metadata({META_KEY.decode(): json.dumps(meta)})
        self.writer.close()


def ingest_file(path: Path, part: Path, phase_map: str, run: str) -> FileResult:
    """Read, classify and attribute one file; write it to ``part`` (Parquet).  This is
    the unit of work a process pool or a Dask worker runs."""
    writer = RunWriter(part)
    try:
        summary = process_into(path, writer.write, phase_map, run)
    finally:
        writer.close()
    summary.part = str(part)
    return summary


def rank_offsets(results: list[FileResult]) -> list[int]:
    """Keep explicit ranks (and refuse duplicates); number the others by file order."""
    worlds = {int(w) for r in results if (w := r.meta.get("world_size")) is not None}
    if len(worlds) > 1:
        raise TracekitError(
            f"The inputs record different world sizes ({', '.join(map(str, sorted(worlds)))}): "
            "they are not the ranks of one run; ingest each run separately."
        )
    offsets: list[int] = []
    seen: dict[int, str] = {}
    next_free = 0
    explicit = all(r.meta.get("rank_source") == "explicit" for r in results)
    for r in results:
        off = 0 if explicit or len(results) == 1 else next_free - (min(r.ranks) if r.ranks else 0)
        for rank in r.ranks:
            if rank + off in seen:
                raise TracekitError(
                    f"{r.path} and {seen[rank + off]} both claim rank {rank + off}: "
                    "ingest the files of one run together, and each run separately."
                )
            seen[rank + off] = r.path
        offsets.append(off)
        if r.ranks:
            next_free = max(next_free, max(r.ranks) + off + 1)
    return offsets


def renumber(
    src: Path, dst: Path, groups: list[list[int]], offsets: list[int], meta: dict[str, Any]
) -> None:
    """Copy ``src`` to ``dst`` row group by row group, adding to the ranks of each
    input's row groups (``groups[i]``) that input's offset (``offsets[i]``)."""
    pf = pq.ParquetFile(src)
    writer = RunWriter(dst)
    try:
        for rgs, off in zip(groups, offsets, strict=True):
            for g in rgs:
                tbl = pf.read_row_group(g)
                if off:
                    idx = tbl.column_names.index("rank")
                    tbl = tbl.set_column(
                        idx, "rank", pc.add(tbl.column("rank"), pa.scalar(off, pa.int32()))
                    )
                writer.write(tbl)
    finally:
        writer.close(meta)


def share(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def run_metadata(
    results: list[FileResult], offsets: list[int], label: str
) -> tuple[dict[str, Any], list[str]]:
    """The run's ``tracekit`` metadata (and its warnings) from the per-file results;
    a run with neither GPU activity nor ranges is refused."""
    warnings = [w for r in results for w in r.meta.get("warnings", [])]
    for r in results:
        if r.gpu_activities == 0 and r.ranges == 0:
            raise TracekitError(f"{r.path} holds neither GPU activity nor NVTX/annotation ranges.")
        if r.gpu_activities == 0:
            warnings.append(f"{Path(r.path).name}: no GPU activity in the trace; GPU coverage is zero.")
        elif r.ranges == 0:
            warnings.append(
                f"{Path(r.path).name}: no NVTX or annotation ranges; kernels cannot be attributed to phases."
            )
    kernel_ns = sum(r.kernel_ns for r in results)
    gpus: dict[str, str] = {}
    for r in results:
        for dev, model in (r.meta.get("gpus") or {}).items():
            gpus.setdefault(str(dev), model)
    ranks = sorted({rk + off for r, off in zip(results, offsets, strict=True) for rk in r.ranks})
    world = {int(w) for r in results if (w := r.meta.get("world_size")) is not None}
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tracekit_version": __version__,
        "run": label,
        "ingested_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sources": [
            {
                "path": r.path,
                "format": r.format,
                "profiler": r.meta.get("profiler"),
                "profiler_version": r.meta.get("profiler_version"),
                "ranks": [rk + off for rk in r.ranks],
                "rank_source": r.meta.get("rank_source"),
                "processes": r.meta.get("processes"),
                "gpus": r.meta.get("gpus"),
                "phase_map": r.phase_map["name"],
                "step_mode": r.step_mode,
                "rows": r.rows,
                "kernels": r.kernels,
            }
            for r, off in zip(results, offsets, strict=True)
        ],
        "gpus": gpus,
        "ranks": ranks,
        "world_size": max(world) if world else (len(ranks) or None),
        "phase_map": results[0].phase_map if results else None,
        "coverage": {
            "kernel_ns": kernel_ns,
            "phase": share(sum(r.phased_ns for r in results), kernel_ns),
            "op": share(sum(r.op_ns for r in results), kernel_ns),
        },
        "rows": sum(r.rows for r in results),
        "kernels": sum(r.kernels for r in results),
        "warnings": warnings,
    }
    return meta, warnings


def ingest(
    paths: Sequence[Path],
    out: Path | None = None,
    *,
    run: str | None = None,
    phase_map: str = "auto",
    jobs: int | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest trace files (the ranks of one run) into one Parquet file.

    >>> res = ingest([Path("examples/traces/h200_tp2/tp2.sqlite.gz")])  # doctest: +SKIP
    >>> res.coverage_phase  # doctest: +SKIP
    0.998
    """
    t0 = time.perf_counter()
    files = expand_inputs(list(paths))
    families = {"kineto" if sniff(f) == "kineto" else "nsys" for f in files}  # fail early
    if len(families) > 1:
        raise TracekitError(
            "The inputs mix Nsight Systems and torch.profiler traces: they are two captures, "
            "not the ranks of one run; ingest each separately."
        )
    first = Path(paths[0])
    label = run or (first.resolve().name if first.is_dir() else run_label(files[0]))
    out = Path(out) if out is not None else Path(f"{label}.parquet")
    if out.exists() and out.is_dir():
        raise TracekitError(f"Output {out} is a folder; name a .parquet file.")
    if not out.parent.exists():
        raise TracekitError(f"Output folder {out.parent} does not exist.")
    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    out_tmp = workdir / out.name
    n = len(files)
    try:
        n_jobs = max(1, min(jobs or usable_cpus(), n))
        if families == {"kineto"}:
            from tracekit.readers.kineto_load import expect_files

            expect_files(n_jobs, n)
        # Every input streams into the one output as it is attributed: one file per
        # worker thread at a time (readers, SQLite, Arrow and NumPy release the GIL,
        # and threads share one copy of the libraries), writes serialised by a lock.
        writer = RunWriter(out_tmp)
        lock = threading.Lock()
        groups: list[list[int]] = [[] for _ in range(n)]  # row groups written per input

        def work(i: int) -> FileResult:
            def write(table: pa.Table) -> None:
                with lock:
                    groups[i].extend(writer.write(table))

            if progress:
                progress("read", i, n, files[i])
            return process_into(files[i], write, phase_map, label)

        try:
            results: list[FileResult] = []
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                for i, res in enumerate(pool.map(work, range(n))):
                    results.append(res)
                    if progress and n > 1:
                        progress("done", i, n, files[i])
            offsets = rank_offsets(results)
            meta, warnings = run_metadata(results, offsets, label)
        except BaseException:
            writer.close()
            raise
        if progress:
            progress("write", n - 1, n, out)
        if any(offsets):
            # Ranks numbered per file (no explicit rank in the traces): shift them,
            # which needs one more pass over the written row groups.
            writer.close()
            renumber(out_tmp, workdir / "renumbered.parquet", groups, offsets, meta)
            os.replace(workdir / "renumbered.parquet", out)
        else:
            writer.close(meta)
            os.replace(out_tmp, out)
    finally:
        if families == {"kineto"}:
            from tracekit.readers.kineto_load import expect_none

            expect_none()
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return IngestResult(
        out=out,
        run=label,
        rows=meta["rows"],
        kernels=meta["kernels"],
        ranks=meta["ranks"],
        gpus=meta["gpus"],
        coverage_phase=meta["coverage"]["phase"],
        coverage_op=meta["coverage"]["op"],
        seconds=seconds,
        warnings=warnings,
        metadata=meta,
    )


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``tracekit`` metadata of an ingested run; a clear error for other files."""
    if not path.is_file():
        raise TracekitError(f"Run file {path} does not exist.")
    try:
        md = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError):
        raise TracekitError(f"{path} is not a Parquet file.") from None
    if META_KEY not in md:
        raise TracekitError(f"{path} is not a tracekit run (no 'tracekit' metadata); make one with tracekit ingest.")
    return dict(json.loads(md[META_KEY]))


def summarize(paths: Iterable[Path]) -> dict[str, Any]:
    """Counts per kind and rank, straight from the Parquet (used by ``info``)."""
    import duckdb

    files = [str(p) for p in paths]
    con = duckdb.connect()
    rel = con.sql(
        "select kind, count(*) as events, count(distinct rank) as ranks, "
        "sum(dur_ns) as dur_ns from read_parquet($files) group by kind order by kind",
        params={"files": files},
    )
    return {row[0]: {"events": row[1], "ranks": row[2], "dur_ns": row[3]} for row in rel.fetchall()}


def result_dict(res: IngestResult) -> dict[str, Any]:
    d = asdict(res)
    d["out"] = str(res.out)
    return d
