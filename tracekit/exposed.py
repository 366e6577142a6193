"""Exposed communication time at ingest: the ``exposed_ns`` column.

Exposed communication is communication time not overlapped by compute on the same
device (DESIGN.md): for a communication kernel, its ``dur_ns`` minus the length of the
union of the compute kernels (kernels whose category is not ``communication``) of the
same (rank, device), clipped to its ``[start_ns, end_ns)``.  Stored per kernel, the
``comm_*`` queries sum it instead of joining every compute kernel to the
communication kernels it overlaps at every query.

Per (rank, device) the compute kernels are merged into disjoint intervals (one stable
sort by start and a running maximum), and ``F(x)``, the covered length before time
``x``, is a prefix sum of the merged lengths plus the part of the interval at ``x``
(found by ``searchsorted``); a communication kernel's covered time is ``F(end) -
F(start)``.  Groups are few (ranks x devices): the loop runs over groups, every event
is handled by NumPy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.busy import group_key, scatter


def merge_intervals(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of ``[start, end)`` intervals as disjoint intervals sorted by start
    (touching intervals merge; an end before its start counts as empty).

    >>> s, e = merge_intervals(np.array([5, 0, 2, 9, 12]), np.array([7, 3, 4, 12, 12]))
    >>> s.tolist(), e.tolist()
    ([0, 5, 9], [4, 7, 12])
    """
    start, end = np.asarray(start, np.int64), np.asarray(end, np.int64)
    if not len(start):
        return start.copy(), end.copy()
    order = np.argsort(start, kind="stable")  # traces come nearly sorted: timsort
    s = start[order]
    reach = np.maximum(end[order], s)
    np.maximum.accumulate(reach, out=reach)
    # An interval opens a new merged one where it starts past every earlier end.
    opens = np.empty(len(s), bool)
    opens[0] = True
    np.greater(s[1:], reach[:-1], out=opens[1:])
    first = np.flatnonzero(opens)
    last = np.empty(len(first), np.int64)
    last[:-1] = first[1:] - 1
    last[-1] = len(s) - 1
    return s[first], reach[last]


def covered_in(a: np.ndarray, b: np.ndarray, m_start: np.ndarray, m_end: np.ndarray) -> np.ndarray:
    """Length of ``[a, b)`` covered by the disjoint sorted intervals ``m_start``,
    ``m_end`` (as :func:`merge_intervals` gives them); 0 where ``b <= a``.

    >>> covered_in(np.array([0, 1, 3, 8, 20]), np.array([20, 2, 8, 9, 30]),
    ...            np.array([0, 5, 9]), np.array([4, 7, 12])).tolist()
    [9, 1, 3, 0, 0]
    """
    a = np.asarray(a, np.int64)
    b = np.maximum(np.asarray(b, np.int64), a)
    if not len(m_start):
        return np.zeros(len(a), np.int64)
    before = np.zeros(len(m_start) + 1, np.int64)  # merged length before interval i
    np.cumsum(m_end - m_start, out=before[1:])

    def upto(x: np.ndarray) -> np.ndarray:
        # Covered length in (-inf, x): the intervals before the last one starting at
        # or before x, and the part of that one below x.
        i = np.searchsorted(m_start, x, side="right") - 1
        j = np.clip(i, 0, None)
        f = before[j] + np.minimum(x, m_end[j]) - m_start[j]
        return np.where(i >= 0, f, 0)

    return upto(b) - upto(a)


def covered_arrays(
    c_start: np.ndarray,
    c_end: np.ndarray,
    c_group: np.ndarray,
    k_start: np.ndarray,
    k_end: np.ndarray,
    k_group: np.ndarray,
) -> np.ndarray:
    """For each communication kernel (``c_*``), the length of its interval covered by
    the union of the compute kernels (``k_*``) of its group.  Groups are int64 codes;
    a negative code is in no group (covers nothing, is covered by nothing).

    >>> covered_arrays(np.array([0, 0, 0]), np.array([10, 10, 10]), np.array([0, 1, -1]),
    ...                np.array([2, 5, 1, 0]), np.array([6, 8, 9, 10]),
    ...                np.array([0, 0, 1, -1])).tolist()
    [6, 8, 0]
    """
    c_group = np.asarray(c_group, np.int64)
    k_group = np.asarray(k_group, np.int64)
    out = np.zeros(len(c_group), np.int64)
    c_rows = np.flatnonzero(c_group >= 0)
    if not len(c_rows):
        return out
    k_rows = np.flatnonzero(k_group >= 0)
    # Rows of each group as slices of one stable sort by group code.
    k_rows = k_rows[np.argsort(k_group[k_rows], kind="stable")]
    c_rows = c_rows[np.argsort(c_group[c_rows], kind="stable")]
    kg, cg = k_group[k_rows], c_group[c_rows]
    groups, c_at = np.unique(cg, return_index=True)
    c_to = np.append(c_at[1:], len(cg))
    k_at = np.searchsorted(kg, groups, side="left")
    k_to = np.searchsorted(kg, groups, side="right")
    for ca, ct, ka, kt in zip(c_at, c_to, k_at, k_to, strict=True):
        if ka == kt:
            continue
        kr, cr = k_rows[ka:kt], c_rows[ca:ct]
        m_start, m_end = merge_intervals(k_start[kr], k_end[kr])
        out[cr] = covered_in(c_start[cr], c_end[cr], m_start, m_end)
    return out


def exposed_arrays(
    start: np.ndarray,
    end: np.ndarray,
    dur: np.ndarray,
    group: np.ndarray,
    is_comm: np.ndarray,
    is_compute: np.ndarray,
    times_ok: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, exposed_ns) of the communication kernels among the rows given: ``dur``
    minus the covered part of ``[start, end)``.  ``group``: int64 (rank, device)
    codes, negative where rank or device is unknown (such a kernel is never covered);
    rows without ``times_ok`` (a NULL start or end) neither cover nor are covered."""
    group = np.asarray(group, np.int64)
    c = np.flatnonzero(is_comm)
    k = np.flatnonzero(is_compute & times_ok)
    c_group = np.where(times_ok[c], group[c], -1)
    covered = covered_arrays(start[c], end[c], c_group, start[k], end[k], group[k])
    return c, np.asarray(dur, np.int64)[c] - covered


def exposed_column(table: pa.Table) -> pa.Array:
    """``exposed_ns`` of a whole attributed and classified table (one input file):
    filled on communication kernels with a ``dur_ns``, NULL on other rows.  A rank or
    device column the table lacks counts as all NULL (nothing is covered)."""
    n = table.num_rows
    names = table.column_names
    kernel = pc.fill_null(pc.equal(table.column("kind"), "kernel"), False)
    comm = pc.fill_null(pc.equal(table.column("category"), "communication"), False)
    is_kernel = np.asarray(kernel.to_numpy(zero_copy_only=False), bool)
    is_comm_all = is_kernel & np.asarray(comm.to_numpy(zero_copy_only=False), bool)
    rows = np.flatnonzero(is_kernel)
    if not is_comm_all.any():
        return pa.nulls(n, pa.int64())
    idx = pa.array(rows, pa.int64())

    def take(name: str) -> pa.Array | pa.ChunkedArray | None:
        return table.column(name).take(idx) if name in names else None

    def ints(col: pa.Array | pa.ChunkedArray | None) -> np.ndarray:
        if col is None:
            return np.zeros(len(rows), np.int64)
        return np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), np.int64)

    def valid(col: pa.Array | pa.ChunkedArray | None) -> np.ndarray:
        if col is None:
            return np.zeros(len(rows), bool)
        return np.asarray(col.is_valid().to_numpy(zero_copy_only=False), bool)

    start_c, end_c, dur_c = take("start_ns"), take("end_ns"), take("dur_ns")
    rank_c, device_c = take("rank"), take("device")
    times_ok = valid(start_c) & valid(end_c)
    known = valid(rank_c) & valid(device_c)
    group = np.where(known, group_key(ints(rank_c), ints(device_c)), -1)
    is_comm = is_comm_all[rows]
    c, exposed = exposed_arrays(
        ints(start_c), ints(end_c), ints(dur_c), group, is_comm, ~is_comm, times_ok
    )
    return scatter(n, rows[c], exposed, valid(dur_c)[c])
