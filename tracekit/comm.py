"""Communication analysis: transfer, waiting, arrival skew and exposed time of
collectives, per phase, operator and rank (DESIGN.md, Communication).

The work is done in DuckDB by the shipped queries ``comm_by_phase``, ``comm_by_op``,
``comm_by_rank`` and ``comm_collectives`` (``queries/comm_*.sql``, runnable as they
are in a DuckDB shell); this module runs them and checks their preconditions.

How collectives are matched across ranks
    The trace does not record the NCCL communicator, so the k-th communication kernel
    of a collective (AllReduce, AllGather ...; the kernel's short name where the name
    does not say, e.g. ``ncclDevKernel_Generic``) on each rank is taken to be the same
    collective. This is exact when every rank runs the same sequence of collectives
    on one communicator per collective type and the profiling windows cover the same
    launches, which is the case for tensor-parallel inference. It is wrong when
    ranks join different communicators for the same collective type (TP and DP
    all-reduces mixed) or when one rank's window misses some collectives; the queries
    report what can be checked: ``unmatched_kernels`` (counts that differ between
    ranks) and ``end_spread_us`` (NCCL collectives finish together, so the end times
    of a correctly matched collective lie within microseconds of each other).

Definitions (all kernel time, summed over ranks)
    transfer = the shortest duration of a collective over its ranks, counted once per
    rank; wait = a rank's duration - transfer (time spent waiting for the others);
    skew = a rank's start - the collective's earliest start; the slowest rank is the
    one with the most skew (it arrives last, the others wait for it). Exposed time is
    the part of a communication kernel that no compute kernel (any other kernel on the
    same rank and device) overlaps, from the union of compute intervals (SQL
    gaps-and-islands). Bus bandwidth uses nccl-tests' factors (AllReduce 2(n-1)/n,
    AllGather/ReduceScatter/AllToAll (n-1)/n, others 1) and needs message bytes in
    the ``bytes`` column.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tracekit.errors import TracekitError
from tracekit.sql import connect, execute, load_query

#: ``by`` value of :func:`comm_table` -> shipped query.
QUERIES = {
    "phase": "comm_by_phase",
    "op": "comm_by_op",
    "rank": "comm_by_rank",
    "collective": "comm_collectives",
}


def comm_table(parquet_paths: Sequence[str | Path], by: str = "phase") -> pd.DataFrame:
    """Communication analysis of one or more runs, grouped ``by`` phase, op, rank or
    collective (one row per collective matched across ranks).

    >>> comm_table(["tp2.parquet"], by="rank")  # doctest: +SKIP
       run   phase  rank  kernels  total_ms  transfer_ms  wait_ms  exposed_ms ...
    """
    if by not in QUERIES:
        raise TracekitError(
            f"Communication analysis cannot group by {by!r}; choose one of {', '.join(QUERIES)}."
        )
    query = load_query(QUERIES[by])
    con = connect(parquet_paths)
    try:
        n = con.execute(
            "SELECT COUNT(*) FROM events WHERE kind = 'kernel' AND category = 'communication'"
        ).fetchall()[0][0]
        if not n:
            names = ", ".join(str(p) for p in parquet_paths)
            raise TracekitError(
                f"{names} holds no communication kernels (NCCL/RCCL or custom all-reduce), "
                "so there is no communication to analyse."
            )
        return execute(con, query)
    finally:
        con.close()


def comm_summary(parquet_paths: Sequence[str | Path]) -> pd.DataFrame:
    """Communication per run and phase: collectives, total, transfer, wait and exposed
    time (ms), skew, bus bandwidth where bytes are known, and the slowest rank.

    >>> comm_summary(["tp2.parquet"])  # doctest: +SKIP
       run    phase  collectives  kernels  ranks  total_ms  transfer_ms  wait_ms ...
    """
    return comm_table(parquet_paths, "phase")
