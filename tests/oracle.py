"""Plain-Python oracles the tests compare tracekit against (no tracekit code here)."""

from __future__ import annotations


def union_length(intervals: list[tuple[int, int]]) -> int:
    """Length of a union of [start, end) intervals, by a plain merge (an interval
    that ends before it starts counts as empty).

    >>> union_length([(0, 10), (5, 15), (20, 25), (3, 1)])
    20
    """
    total, cur_s, cur_e = 0, 0, None
    for s, e in sorted(intervals):
        e = max(e, s)
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total
