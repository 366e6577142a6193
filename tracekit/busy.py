"""Busy time at ingest: the ``busy_ns`` and ``step_busy_ns`` columns.

Busy time is the length of the union of a device's GPU activity intervals.  In start
order, each interval adds the part of it that lies past every earlier interval of its
group: ``max(0, end - max(start, reach))``, ``reach`` = the latest end so far.  Stored
per row, a union length becomes a plain ``SUM`` in SQL instead of a window over
millions of rows sorted by start at every query.

Groups: ``busy_ns`` per (rank, device, phase), ``step_busy_ns`` per (rank, device,
phase, step); NULL is a value of its own in each (a NULL phase is one group).  All of
it is two stable sorts and a running maximum in NumPy: a segmented running maximum is
one ``np.maximum.accumulate`` once each group's values are lifted above every value
of the groups before it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.schema import GPU_KINDS

#: Values are lifted by segment number * width; the product stays below this.
_KEY_LIMIT = 1 << 62


def exclusive_union(start: np.ndarray, end: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Each interval's part not covered by the intervals of its group that come before
    it in start order (equal starts: row order), so that the parts of a group sum to
    the length of its union.

    ``start``, ``end``: int64 ns; ``group``: int64 group codes (any values).

    >>> s = np.array([0, 2, 3, 10, 0, 0])
    >>> e = np.array([5, 4, 7, 12, 1, 1])
    >>> g = np.array([0, 0, 0, 0, 1, 1])
    >>> exclusive_union(s, e, g).tolist()   # group 0: [0,7) and [10,12); group 1: [0,1)
    [5, 0, 2, 2, 1, 0]
    """
    start, group = np.asarray(start, np.int64), np.asarray(group, np.int64)
    order = _group_order(group, _start_order(start))
    return _parts(start, np.asarray(end, np.int64), group, order)


def busy_arrays(
    start: np.ndarray,
    end: np.ndarray,
    rank: np.ndarray,
    device: np.ndarray,
    phase: np.ndarray,
    step: np.ndarray,
    step_valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(busy_ns, step_busy_ns) of GPU activities, from int64 codes of their rank,
    device, phase and step (any values; equal value, same group); ``step_busy_ns``
    is 0 where not ``step_valid``."""
    start, end = np.asarray(start, np.int64), np.asarray(end, np.int64)
    base = group_key(rank, device, phase)
    order = _group_order(base, _start_order(start))
    busy = _parts(start, end, base, order)
    # Steps refine (rank, device, phase), and come nearly sorted in its order.
    key = group_key(base, np.where(step_valid, step, 0))
    del base
    by_step = _group_order(key, order)
    del order
    step_busy = _parts(start, end, key, by_step[step_valid[by_step]])
    return busy, step_busy


def _start_order(start: np.ndarray) -> np.ndarray:
    # Stable: equal starts keep row order.  Traces come nearly sorted by start, which
    # the stable sort (timsort) takes in little more than a pass.
    return np.argsort(start, kind="stable")


def _group_order(group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``order`` stably re-sorted by ``group``: rows by group, then as in ``order``."""
    g = group[order]
    if len(g) and g.min() >= 0 and g.max() < (1 << 16):
        g = g.astype(np.uint16)  # NumPy sorts 16-bit keys by radix
    return order[np.argsort(g, kind="stable")]


def _parts(start: np.ndarray, end: np.ndarray, group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The exclusive parts of the rows in ``order``, which sorts them by (group,
    start); rows not in ``order`` get 0.  Steps work in place: few full-length arrays."""
    out = np.zeros(len(start), np.int64)
    n = len(order)
    if n == 0:
        return out
    s = start[order]
    e = end[order]
    # An end before its start adds nothing and never reaches past a later start:
    # clamping it to the start changes no result and keeps offsets non-negative.
    np.maximum(e, s, out=e)
    t0 = int(s.min())
    s -= t0
    e -= t0
    # Segment (group) number along the order: 0, 0, 1, 1, 1, 2 ...
    g = group[order]
    lift = np.zeros(n, np.int64)
    np.cumsum(g[1:] != g[:-1], out=lift[1:])
    del g
    width = int(e.max()) + 1
    if (int(lift[-1]) + 1) * width < _KEY_LIMIT:
        lift *= width
        reach = _exclusive_max(e + lift, lift)
        reach -= lift
    else:
        # Clock span too wide to lift: the maximum runs over the ranks of the ends
        # (width n + 1), which fits for any array that fits in memory.
        ends, e_rank = np.unique(e, return_inverse=True)
        lift *= len(ends) + 1
        r = _exclusive_max(e_rank.reshape(-1) + 1 + lift, lift)
        r -= lift  # 0: nothing before
        reach = np.where(r > 0, ends[np.clip(r - 1, 0, None)], 0)
    del lift
    np.maximum(reach, s, out=reach)
    np.subtract(e, reach, out=reach)
    np.maximum(reach, 0, out=reach)
    out[order] = reach
    return out


def _exclusive_max(values: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Running maximum of the values strictly before each position, at least ``floor``,
    in place of ``values``.  With values lifted per segment, a segment's floor is above
    every value of the segments before it: the maximum never leaks into the next group."""
    np.maximum.accumulate(values, out=values)
    values[1:] = values[:-1]  # NumPy copies overlapping slices as if buffered
    values[0] = floor[0]
    return np.maximum(values, floor, out=values)


def _dense(values: np.ndarray) -> np.ndarray:
    """Codes 0..k-1 of the distinct values: a lookup table (value order) for a small
    range of values, else a hash pass (first-seen order); never a sort."""
    if len(values) == 0:
        return np.zeros(0, np.int64)
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < max(1 << 20, 4 * len(values)):
        present = np.zeros(hi - lo + 1, bool)
        present[values - lo] = True
        lut = np.cumsum(present, dtype=np.int64) - 1
        return lut[values - lo]
    enc = pc.dictionary_encode(pa.array(values, pa.int64()))
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int64)


def group_key(*parts: np.ndarray) -> np.ndarray:
    """One non-negative int64 code per row for the tuple of ``parts`` (int64 codes of
    any values): equal tuples, equal codes; in tuple order where values are small.

    >>> group_key(np.array([3, 3, -1, 3]), np.array([7, 8, 7, 7])).tolist()
    [8, 9, 0, 8]
    """
    key = np.zeros(len(parts[0]), np.int64)
    size = 1  # every key < size
    for part in parts:
        p = np.asarray(part, np.int64)
        lo, hi = (int(p.min()), int(p.max())) if len(p) else (0, 0)
        if hi - lo >= (1 << 24):
            p = _dense(p)
            lo, hi = 0, int(p.max())
        if size * (hi - lo + 1) >= _KEY_LIMIT:
            key = _dense(key)
            size = int(key.max()) + 1
        key = key * (hi - lo + 1) + (p - lo)
        size *= hi - lo + 1
    return key


def codes(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An int64 code per row, equal for equal values, with NULL a value of its own:
    integers stay themselves (NULL -> one past the largest), strings and
    dictionaries become dictionary indices."""
    if isinstance(col, pa.ChunkedArray):
        if pa.types.is_dictionary(col.type):
            col = col.unify_dictionaries()
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        # Through codes of the dictionary's own values: a repeated value is one group.
        col = pc.dictionary_encode(col.dictionary).indices.take(col.indices)
    elif not pa.types.is_integer(col.type):
        col = pc.dictionary_encode(col).indices
    if col.null_count:
        col = pc.fill_null(col, int(pc.max(col).as_py() or 0) + 1)
    return np.asarray(col.to_numpy(zero_copy_only=False), np.int64)


def busy_columns(table: pa.Table) -> dict[str, pa.Array]:
    """``busy_ns`` and ``step_busy_ns`` of a whole attributed table (one input file):
    filled on GPU activities, NULL on other rows, and ``step_busy_ns`` NULL where
    ``step`` is.  A grouping column the table lacks counts as all NULL."""
    n = table.num_rows
    names = table.column_names
    is_gpu = pc.is_in(table.column("kind"), value_set=pa.array(list(GPU_KINDS)))
    ok = pc.and_(pc.is_valid(table.column("start_ns")), pc.is_valid(table.column("end_ns")))
    sel = pc.fill_null(pc.and_(is_gpu, ok), False)
    rows = np.flatnonzero(np.asarray(sel.to_numpy(zero_copy_only=False), bool))
    idx = pa.array(rows, pa.int64())

    def col(name: str) -> pa.Array | pa.ChunkedArray | None:
        return table.column(name).take(idx) if name in names else None

    def code(name: str) -> np.ndarray:
        c = col(name)
        return codes(c) if c is not None else np.zeros(len(rows), np.int64)

    def ints(name: str) -> np.ndarray:
        return np.asarray(table.column(name).take(idx).to_numpy(zero_copy_only=False), np.int64)

    step = col("step")
    step_valid = (
        np.asarray(step.is_valid().to_numpy(zero_copy_only=False), bool)
        if step is not None
        else np.zeros(len(rows), bool)
    )
    busy, step_busy = busy_arrays(
        ints("start_ns"),
        ints("end_ns"),
        code("rank"),
        code("device"),
        code("phase"),
        code("step"),
        step_valid,
    )
    return {
        "busy_ns": scatter(n, rows, busy, np.ones(len(rows), bool)),
        "step_busy_ns": scatter(n, rows, step_busy, step_valid),
    }


def scatter(n: int, rows: np.ndarray, values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """An int64 column of ``n`` rows: ``values`` at ``rows`` where ``valid``, else NULL."""
    out = np.zeros(n, np.int64)
    mask = np.ones(n, bool)
    out[rows] = values
    mask[rows] = ~valid
    return pa.array(out, pa.int64(), mask=mask)
