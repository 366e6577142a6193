"""launch_first: TRUE on one GPU activity (the first by start) of each launching call
(pid, correlation), FALSE on its others, NULL without a correlation; its filtered count
is the number of launching calls.

Expected values: hand-worked rows for the NumPy function; on real traces, distinct
(pid, correlation) pairs counted by DuckDB on the same Parquet, and the number of
cudaGraphLaunch calls of the CUDA-graph examples (one per decode step and rank, as the
program issued them); never tracekit.launches itself.
"""

from __future__ import annotations

import doctest
import tarfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from ingest_cases import ingest_case

import tracekit.launches as launches
from tracekit.ingest import ingest
from tracekit.launches import first_of_launch, launch_first_column
from tracekit.sql import run_query

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"
EXAMPLES = ROOT / "examples" / "traces"
MFU = SHARED / "nsys" / "mfu_2gpu_before.sqlite"
MFU_AFTER = SHARED / "nsys" / "mfu_2gpu_after.sqlite"
DLRM = SHARED / "kineto" / "param-dlrm-8rank" / "dlrm_kineto.tar.gz"
VLLM_GRAPHS = (
    SHARED / "kineto" / "tracelens" / "vllm_prefilldecode_piecewise" / "graph_execution.json.gz"
)


def test_doctests() -> None:
    assert doctest.testmod(launches).failed == 0


def test_hand_made_rows() -> None:
    rows = [
        # pid, corr, start, expected
        (1, 7, 30, False),
        (1, 7, 10, True),  # the earliest of (1, 7)
        (1, 7, 10, False),  # same start: the earlier row wins
        (2, 7, 50, True),  # same correlation, other process: another call
        (1, 8, 5, True),  # a call with one activity
        (-1, 8, 5, True),  # a NULL pid (given as its own code) is a value of its own
    ]
    got = first_of_launch(
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
    )
    assert got.tolist() == [r[3] for r in rows]
    assert first_of_launch(np.zeros(0), np.zeros(0), np.zeros(0)).tolist() == []


def test_column_nulls_and_kinds() -> None:
    t = pa.table(
        {
            "kind": ["kernel", "kernel", "memcpy", "runtime", "kernel", "memset", "kernel"],
            "pid": pa.array([1, 1, 1, 1, 1, None, None], pa.int64()),
            "correlation": pa.array([5, 5, 6, 5, None, 9, 9], pa.int64()),
            "start_ns": pa.array([20, None, 3, 1, 4, 8, 7], pa.int64()),
        }
    )
    # The NULL start counts as latest; the runtime call itself is no GPU activity.
    assert launch_first_column(t).to_pylist() == [True, False, True, None, None, False, True]


# --------------------------------------------------------------------------- real traces

# Distinct launching calls per group, against the filtered count; and every call's
# activities in one (rank, phase, step).
_COUNTS = """
WITH g AS (SELECT * FROM read_parquet($f) WHERE kind IN ('kernel', 'memcpy', 'memset'))
SELECT rank, phase, step,
       COUNT(DISTINCT (pid, correlation)) FILTER (WHERE correlation IS NOT NULL) AS want,
       COUNT(*) FILTER (WHERE launch_first) AS got
FROM g
GROUP BY GROUPING SETS ((rank, phase), (rank, phase, step))
"""
_ONE_GROUP = """
SELECT count(*) FROM (
    SELECT rank, pid, correlation
    FROM read_parquet($f)
    WHERE kind IN ('kernel', 'memcpy', 'memset') AND correlation IS NOT NULL
    GROUP BY rank, pid, correlation
    HAVING COUNT(DISTINCT phase) > 1 OR COUNT(DISTINCT step) > 1
        OR COUNT(phase) NOT IN (0, COUNT(*)) OR COUNT(step) NOT IN (0, COUNT(*))
        OR COUNT(*) FILTER (WHERE launch_first) <> 1
)
"""


def _dlrm(tmp_path: Path) -> list[Path]:
    with tarfile.open(DLRM) as tar:
        tar.extractall(tmp_path, filter="data")
    return [tmp_path / "dlrm_kineto"]


CASES = [
    ("nsys_tp2", lambda _: [EXAMPLES / "h200_tp2" / "nsys"], None),
    ("nsys_tp2_graph_tiny_batches", lambda _: [EXAMPLES / "h200_tp2_graph" / "nsys"], 777),
    ("nsys_two_files_renumbered", lambda _: [MFU, MFU_AFTER], 999),
    ("kineto_tp4_graph", lambda _: [EXAMPLES / "h200_tp4_graph" / "torch"], None),
    ("kineto_vllm_graphs", lambda _: [VLLM_GRAPHS], None),
    ("kineto_dlrm_8_files", _dlrm, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_counts_equal_distinct_pairs(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _, make, batch_rows = case
    run = ingest_case(make, batch_rows, tmp_path, monkeypatch)
    f = {"f": str(run)}
    groups = duckdb.connect().execute(_COUNTS, f).fetchall()
    assert groups and sum(g[3] for g in groups) > 0
    bad = [g for g in groups if g[3] != g[4]]
    assert not bad, bad[:5]
    assert duckdb.connect().execute(_ONE_GROUP, f).fetchone() == (0,)
    wrong = (
        duckdb.connect()
        .execute(
            "SELECT count(*) FROM read_parquet($f) WHERE (launch_first IS NOT NULL) <> "
            "(kind IN ('kernel', 'memcpy', 'memset') AND correlation IS NOT NULL)",
            f,
        )
        .fetchone()
    )
    assert wrong == (0,)


@pytest.mark.parametrize("fmt", ["nsys", "torch"])
def test_graph_replays_are_one_launch(fmt: str, tmp_path: Path) -> None:
    """CUDA-graph decode: all GPU work of a decode step is one graph replay, whose
    kernels and copies carry one launch between them, so the decode launches are the
    cudaGraphLaunch calls (2 ranks x 16 steps) and phase_breakdown's
    launches_per_step is 1 (each replay counted once)."""
    run = tmp_path / "g.parquet"
    ingest([EXAMPLES / "h200_tp2_graph" / fmt], run, jobs=1)
    f = {"f": str(run)}
    (calls,) = (
        duckdb.connect()
        .execute(
            "SELECT count(*) FROM read_parquet($f) WHERE kind = 'runtime' AND phase = 'decode' "
            "AND name LIKE 'cudaGraphLaunch%'",
            f,
        )
        .fetchone()
    )  # type: ignore[misc]
    assert calls == 2 * 16
    (firsts, activities) = (
        duckdb.connect()
        .execute(
            "SELECT count(*) FILTER (WHERE launch_first), count(*) FROM read_parquet($f) "
            "WHERE kind IN ('kernel', 'memcpy', 'memset') AND phase = 'decode'",
            f,
        )
        .fetchone()
    )  # type: ignore[misc]
    assert firsts == calls and activities > 10 * calls
    pb = run_query("phase_breakdown", [run])
    decode = pb[pb["phase"] == "decode"]
    assert len(decode) == 2 and (decode["steps"] == 16).all()
    assert (decode["launches_per_step"] == 1.0).all()
