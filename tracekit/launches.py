"""Launch counts at ingest: the ``launch_first`` column.

A launching API call (a kernel launch, a memcpy, a ``cudaGraphLaunch`` that replays
many kernels) is identified by its (pid, correlation).  ``launch_first`` is TRUE on
exactly one GPU activity of each such call, the first by ``start_ns`` (equal starts:
row order), FALSE on its other activities and NULL where ``correlation`` is NULL.
GPU activities are attributed through their launch, so every activity of one call has
the same rank, phase and step, and ``COUNT(*) FILTER (WHERE launch_first)`` over any
union of (rank, phase, step) groups counts distinct launching calls: a plain filtered
count instead of a distinct count over millions of (pid, correlation) pairs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.attribute import dense_codes
from tracekit.busy import codes, group_key
from tracekit.schema import GPU_KINDS

#: A NULL start, sorted after every other.
LAST = np.iinfo(np.int64).max


def first_of_launch(pid: np.ndarray, corr: np.ndarray, start: np.ndarray) -> np.ndarray:
    """TRUE on the first row by ``start`` (ties: row order) of each (pid, corr) pair
    (int64 codes of any values; NULL pids as one value of their own).

    >>> first_of_launch(np.array([1, 1, 1, 2, 1]), np.array([7, 7, 8, 7, 7]),
    ...                 np.array([30, 10, 5, 5, 10])).tolist()
    [False, True, True, True, False]
    """
    n = len(pid)
    out = np.zeros(n, bool)
    if n == 0:
        return out
    key = _pair_key(np.asarray(pid, np.int64), np.asarray(corr, np.int64))
    order = np.argsort(np.asarray(start, np.int64), kind="stable")
    # Stable by key: within a key, start order (then row order) is kept.
    order = order[np.argsort(key[order], kind="stable")]
    k = key[order]
    first = np.ones(n, bool)
    np.not_equal(k[1:], k[:-1], out=first[1:])
    out[order[first]] = True
    return out


def _pair_key(pid: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """An int64 key per (pid, corr) pair, equal for equal pairs: pid codes (a few
    processes) times the correlation range, without densifying the correlations (a
    hash pass over millions of them costs more than the sorts)."""
    _, p = dense_codes(pid - pid.min())
    lo = int(corr.min())
    span = int(corr.max()) - lo + 1
    if (int(p.max()) + 1) * span < (1 << 62):
        return p * span + (corr - lo)
    return group_key(pid, corr)


def launch_first_array(
    pid: np.ndarray, corr: np.ndarray, start: np.ndarray, corr_ok: np.ndarray
) -> np.ndarray:
    """``launch_first`` as int8 (1 TRUE, 0 FALSE, -1 NULL) of GPU activities:
    :func:`first_of_launch` over the rows with a correlation (``corr_ok``).  Give a
    NULL start as :data:`LAST` (later than any other)."""
    out = np.full(len(pid), -1, np.int8)
    rows = np.flatnonzero(corr_ok)
    if len(rows):
        out[rows] = first_of_launch(pid[rows], corr[rows], start[rows])
    return out


def launch_first_column(table: pa.Table) -> pa.Array:
    """``launch_first`` of a whole table (one input file): on GPU activities with a
    correlation, NULL on other rows."""
    n = table.num_rows
    is_gpu = pc.fill_null(
        pc.is_in(table.column("kind"), value_set=pa.array(list(GPU_KINDS))), False
    )
    has_corr = "correlation" in table.column_names
    if not has_corr:
        return pa.nulls(n, pa.bool_())
    sel = pc.and_(is_gpu, pc.is_valid(table.column("correlation")))
    rows = np.flatnonzero(np.asarray(sel.to_numpy(zero_copy_only=False), bool))
    if not len(rows):
        return pa.nulls(n, pa.bool_())
    idx = pa.array(rows, pa.int64())
    pid = (
        codes(table.column("pid").take(idx))
        if "pid" in table.column_names
        else np.zeros(len(rows), np.int64)
    )
    corr = np.asarray(
        table.column("correlation").take(idx).to_numpy(zero_copy_only=False), np.int64
    )
    start = np.asarray(
        pc.fill_null(table.column("start_ns").take(idx), LAST).to_numpy(zero_copy_only=False),
        np.int64,
    )
    values = np.zeros(n, bool)
    mask = np.ones(n, bool)
    values[rows] = first_of_launch(pid, corr, start)
    mask[rows] = False
    return pa.array(values, pa.bool_(), mask=mask)
