"""Ingest on an existing Dask cluster: one task per input file, one Parquet file each.

For runs with more rank files than one machine should hold or parse
(``tracekit ingest --dask tcp://scheduler:8786 ...``).  The scheduling is Dask's;
the per-file work is exactly :func:`tracekit.ingest.ingest_file`, so a file
ingested here is attributed the same way as in a local ``tracekit ingest``.

Output is a folder, a Parquet dataset with one file per input
(``part-00000.parquet`` ...), all with the events schema and each carrying the
whole run's ``tracekit`` metadata (plus which part it is), so that

- DuckDB reads it as ``read_parquet('run_dir/*.parquet')``,
- Dask as ``dask.dataframe.read_parquet('run_dir')``,
- pyarrow as ``pyarrow.dataset.dataset('run_dir')``,
- tracekit's ``read_metadata`` on any one part.

Two passes, both on the workers: (1) read, classify, attribute each file into a
temporary part; (2) once every file's ranks are known on the client, renumber
ranks where needed, stamp the run metadata and move the part into place.  Inputs
and the output folder must be on storage every worker sees (a shared file
system), as for any Dask Parquet writer.  Dask is an optional extra:
``pip install 'tracekit[dask]'``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tracekit.errors import TracekitError
from tracekit.ingest import (
    FileResult,
    expand_inputs,
    ingest_file,
    rank_offsets,
    renumber,
    run_label,
    run_metadata,
)
from tracekit.readers import sniff


@dataclass
class DaskIngestResult:
    out: Path
    run: str
    parts: list[Path]
    rows: int
    kernels: int
    ranks: list[int]
    coverage_phase: float | None
    coverage_op: float | None
    seconds: float
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def _client(address: Any, timeout: str) -> tuple[Any, bool]:
    """A distributed Client for ``address`` (a scheduler address, a cluster object
    or a Client); the bool says whether we opened it (and so must close it)."""
    try:
        from distributed import Client
    except ModuleNotFoundError:
        raise TracekitError(
            "Dask ingest needs dask.distributed: pip install 'tracekit[dask]'."
        ) from None
    if isinstance(address, Client):
        return address, False
    try:
        return Client(address, timeout=timeout), True
    except OSError as exc:
        raise TracekitError(f"Could not reach the Dask scheduler at {address}: {exc}.") from None


def _finalize(part: str, dest: str, offset: int, meta_json: bytes) -> int:
    """Worker side of pass 2: ranks shifted, schema and metadata stamped, moved into place."""
    tmp = dest + ".tmp"
    pf = pq.ParquetFile(part)
    renumber(Path(part), Path(tmp), [list(range(pf.num_row_groups))], [offset], json.loads(meta_json))
    rows = pf.metadata.num_rows
    os.replace(tmp, dest)
    os.remove(part)
    return rows


def _run_metadata(
    results: list[FileResult], offsets: list[int], label: str
) -> tuple[dict[str, Any], list[str]]:
    """The run's metadata as :func:`tracekit.ingest.ingest` writes it, marked as
    written by Dask."""
    meta, warnings = run_metadata(results, offsets, label)
    meta["engine"] = "dask"
    return meta, warnings


def ingest_dask(
    paths: list[Path],
    out: Path,
    address: Any,
    *,
    run: str | None = None,
    phase_map: str = "auto",
    connect_timeout: str = "30s",
) -> DaskIngestResult:
    """Ingest trace files on a Dask cluster into the Parquet dataset folder ``out``.

    ``address`` is a scheduler address (``tcp://host:8786``), a cluster object
    (``LocalCluster``) or a ``distributed.Client``.

    >>> res = ingest_dask([Path("ranks/")], Path("run_dir"), "tcp://10.0.0.1:8786")  # doctest: +SKIP
    >>> duckdb.sql("select count(*) from read_parquet('run_dir/*.parquet')")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    files = expand_inputs(list(paths))
    for f in files:
        sniff(f)  # unknown formats fail before any work is sent
    label = run or run_label(files[0])
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TracekitError(f"Output {out} is a file; --dask writes a folder of Parquet parts.")
    if out.exists() and any(out.glob("*.parquet")):
        raise TracekitError(
            f"Output folder {out} already holds Parquet files; name a new or empty folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    client, owned = _client(address, connect_timeout)
    # Workers write their first pass here; a hidden folder is not read as part of the dataset.
    work = out / f".tracekit-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    n = len(files)
    dests = [out / f"part-{i:05d}.parquet" for i in range(n)]
    try:
        futs = [
            client.submit(
                ingest_file,
                f.resolve(),
                (work / f"part-{i:05d}.parquet").resolve(),
                phase_map,
                label,
                key=f"tracekit-ingest-{uuid.uuid4().hex[:8]}-{i}",
                pure=False,
            )
            for i, f in enumerate(files)
        ]
        results: list[FileResult] = client.gather(futs)
        offsets = rank_offsets(results)
        meta, warnings = _run_metadata(results, offsets, label)
        finals = []
        for i, (r, off) in enumerate(zip(results, offsets, strict=True)):
            part_meta = dict(meta, part={"index": i, "of": n, "source": r.path})
            finals.append(
                client.submit(
                    _finalize,
                    r.part,
                    str(dests[i].resolve()),
                    off,
                    json.dumps(part_meta).encode(),
                    pure=False,
                )
            )
        client.gather(finals)
    except BaseException:
        for d in dests:
            d.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if owned:
            client.close()
    return DaskIngestResult(
        out=out,
        run=label,
        parts=dests,
        rows=meta["rows"],
        kernels=meta["kernels"],
        ranks=meta["ranks"],
        coverage_phase=meta["coverage"]["phase"],
        coverage_op=meta["coverage"]["op"],
        seconds=time.perf_counter() - t0,
        warnings=warnings,
        metadata=meta,
    )
