"""busy_ns and step_busy_ns: each GPU activity's part past the earlier-starting
activities of its (rank, device, phase) and (rank, device, phase, step) group, so that
their sums are busy time (union lengths).

Expected values: a plain-Python interval merge and hand-worked intervals for the
NumPy function; on real traces, the union computed in DuckDB on the same Parquet by
the window formulation the queries used before the columns existed, never by
tracekit.busy itself.
"""

from __future__ import annotations

import doctest
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_cases import ingest_in_batches
from oracle import union_length as _union

import tracekit.busy as busy
from tracekit.busy import busy_columns, exclusive_union
from tracekit.ingest import ingest
from tracekit.readers import nsys
from tracekit.schema import SCHEMA
from tracekit.shell import init_sql
from tracekit.sql import ADDED_COLUMNS, list_queries, run_query

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"
EXAMPLES = ROOT / "examples" / "traces"
MFU = SHARED / "nsys" / "mfu_2gpu_before.sqlite"
MFU_AFTER = SHARED / "nsys" / "mfu_2gpu_after.sqlite"
HTA = SHARED / "kineto" / "hta" / "nccl_data.json.gz"
# Phase maps that make real ranges of traces without phase ranges stand in for phases
# (as tests/test_queries.py does), so the phase groups are not all NULL.
MFU_PHASES = """
name = "mfu-test"
[[phase]]
pattern = '^(?P<phase>FlashAttnFunc|AllToAll4D)\\b'
"""
HTA_PHASES = """
name = "hta-test"
step = ['^ProfilerStep#\\d+$']
[[phase]]
pattern = '^## (?P<phase>forward|backward|optimizer) ##$'
"""



# --------------------------------------------------------------------------- NumPy


def test_doctests() -> None:
    assert doctest.testmod(busy).failed == 0


def test_hand_made_intervals() -> None:
    """Per row, worked by hand: nested, overlapping, touching, identical starts."""
    rows = [
        # (group, start, end, expected part)
        (0, 0, 10, 10),   # first
        (0, 2, 5, 0),     # nested inside [0, 10)
        (0, 8, 14, 4),    # overlaps: adds [10, 14)
        (0, 14, 20, 6),   # touches the end of the last: adds all
        (0, 25, 30, 5),   # after a gap
        (0, 25, 27, 0),   # same start as the one before, shorter: row order decides
        (0, 26, 33, 3),   # adds [30, 33)
        (1, 3, 9, 6),     # another group: nothing before it
        (1, 3, 9, 0),     # identical interval
        (1, 9, 9, 0),     # empty
        (1, 7, 6, 0),     # ends before it starts: adds nothing
        (1, 9, 12, 3),    # touches
    ]
    g = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows])
    e = np.array([r[2] for r in rows])
    got = exclusive_union(s, e, g)
    assert got.tolist() == [r[3] for r in rows]
    # Row order does not matter for the sums, only for which of the ties gets it.
    perm = np.random.default_rng(0).permutation(len(rows))
    got_p = exclusive_union(s[perm], e[perm], g[perm])
    for k in (0, 1):
        assert got_p[g[perm] == k].sum() == got[g == k].sum()


@pytest.mark.parametrize("wide", [False, True], ids=["lifted", "ranked"])
def test_random_groups_sum_to_their_union(wide: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many groups of random intervals (ties, nesting, zero length); ``wide`` forces
    the path for clock spans too wide to lift by value."""
    if wide:
        monkeypatch.setattr(busy, "_KEY_LIMIT", 4)
    rng = np.random.default_rng(42)
    for _ in range(50):
        n = int(rng.integers(1, 300))
        s = rng.integers(0, 200, n) * 1_000 + 10**15
        e = s + rng.choice([0, 1, 500, 1_000, 7_000, 40_000], n)
        g = rng.integers(-2, 5, n) * 1_000_003
        got = exclusive_union(s, e, g)
        assert (got >= 0).all()
        for k in np.unique(g):
            m = g == k
            assert got[m].sum() == _union(list(zip(s[m].tolist(), e[m].tolist(), strict=True)))


def test_busy_columns_groups_and_nulls() -> None:
    """busy_columns on a small events table: NULL phase and NULL device are groups of
    their own, CPU rows and rows without a step get NULL."""
    rows = [
        # kind, rank, device, phase, step, start, end
        ("kernel", 0, 0, "decode", 0, 0, 10),
        ("memcpy", 0, 0, "decode", 0, 5, 15),   # same group, overlaps
        ("kernel", 0, 0, "decode", 1, 12, 20),  # next step: overlaps step 0 in time
        ("kernel", 0, 0, None, None, 0, 10),     # NULL phase: its own group
        ("memset", 0, 0, None, None, 4, 6),
        ("kernel", 0, 1, "decode", 0, 0, 10),   # other device
        ("kernel", 1, 0, "decode", 0, 0, 10),   # other rank
        ("kernel", 0, None, "decode", 0, 3, 4),  # NULL device: its own group
        ("runtime", 0, None, None, None, 0, 10),
        ("range", 0, None, "decode", 0, 0, 30),
        ("kernel", 0, 0, "prefill", 0, 0, 10),  # other phase, same time
    ]
    t = pa.table(
        {
            "kind": [r[0] for r in rows],
            "rank": pa.array([r[1] for r in rows], pa.int32()),
            "device": pa.array([r[2] for r in rows], pa.int32()),
            "phase": pa.array([r[3] for r in rows]).dictionary_encode(),
            "step": pa.array([r[4] for r in rows], pa.int32()),
            "start_ns": pa.array([r[5] for r in rows], pa.int64()),
            "end_ns": pa.array([r[6] for r in rows], pa.int64()),
        }
    )
    cols = busy_columns(t)
    assert cols["busy_ns"].to_pylist() == [10, 5, 5, 10, 0, 10, 10, 1, None, None, 10]
    assert cols["step_busy_ns"].to_pylist() == [10, 5, 8, None, None, 10, 10, 1, None, None, 10]


# --------------------------------------------------------------------------- real traces

# Union per group by the window formulation (the queries' SQL before busy_ns existed).
_ORACLE = """
WITH g AS (
    SELECT * FROM read_parquet($f) WHERE kind IN ('kernel', 'memcpy', 'memset')
),
r AS (
    SELECT rank, device, phase, step, start_ns, end_ns, busy_ns, step_busy_ns,
           MAX(end_ns) OVER (PARTITION BY rank, device, phase ORDER BY start_ns
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach,
           MAX(end_ns) OVER (PARTITION BY rank, device, phase, step ORDER BY start_ns
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS step_reach
    FROM g
)
SELECT {keys},
       SUM(GREATEST(end_ns - GREATEST(start_ns, COALESCE({reach}, start_ns)), 0)) AS want,
       SUM({col}) AS got, COUNT(*) AS n
FROM r {where}
GROUP BY ALL
"""


def _check_run(run: Path) -> None:
    con = duckdb.connect()
    f = {"f": str(run)}
    for keys, reach, col, where in (
        ("rank, device, phase", "reach", "busy_ns", ""),
        ("rank, device, phase, step", "step_reach", "step_busy_ns", "WHERE step IS NOT NULL"),
    ):
        groups = con.execute(
            _ORACLE.format(keys=keys, reach=reach, col=col, where=where), f
        ).fetchall()
        assert groups, (run, col)
        bad = [g for g in groups if g[-3] != g[-2]]
        assert not bad, (run, col, bad[:5])
    # Filled exactly on GPU activities, step_busy_ns exactly where step is.
    wrong = con.execute(
        """
        SELECT count(*) FILTER (WHERE (kind IN ('kernel', 'memcpy', 'memset')) <> (busy_ns IS NOT NULL)),
               count(*) FILTER (WHERE (kind IN ('kernel', 'memcpy', 'memset') AND step IS NOT NULL)
                                      <> (step_busy_ns IS NOT NULL)),
               count(*) FILTER (WHERE busy_ns < 0 OR busy_ns > dur_ns OR step_busy_ns > dur_ns
                                      OR step_busy_ns < busy_ns)
        FROM read_parquet($f)
        """,
        f,
    ).fetchone()
    assert wrong == (0, 0, 0), run


def _phase_map(tmp_path: Path, text: str | None) -> str:
    if text is None:
        return "auto"
    p = tmp_path / "phases.toml"
    p.write_text(text)
    return str(p)


CASES = [
    # (id, inputs, phase map text, nsys batch rows or None)
    ("nsys_tp2", [EXAMPLES / "h200_tp2" / "nsys" / "h200_tp2.sqlite.gz"], None, None),
    ("nsys_tp4_graph_tiny_batches", [EXAMPLES / "h200_tp4_graph" / "nsys" / "h200_tp4_graph.sqlite.gz"], None, 777),
    ("nsys_mfu_tiny_batches", [MFU], MFU_PHASES, 999),
    ("nsys_two_files_renumbered", [MFU, MFU_AFTER], MFU_PHASES, None),
    ("kineto_tp2", [EXAMPLES / "h200_tp2" / "torch"], None, None),
    ("kineto_tp4_graph", [EXAMPLES / "h200_tp4_graph" / "torch"], None, None),
    ("kineto_hta", [HTA], HTA_PHASES, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sums_equal_the_window_union(
    case: tuple[str, list[Path], str | None, int | None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, inputs, pm_text, batch_rows = case
    for p in inputs:
        if not p.exists():
            pytest.skip(f"{p} not present")
    if batch_rows is not None:
        monkeypatch.setattr(nsys, "BATCH_ROWS", batch_rows)  # many windows per GPU table
    run = tmp_path / "run.parquet"
    ingest(inputs, run, phase_map=_phase_map(tmp_path, pm_text), jobs=2)
    _check_run(run)


def test_nsys_batch_boundaries_do_not_matter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same export in one batch per table and in 777-row batches: every row keeps
    its busy values (also covered by test_nsys_stream's whole-row comparison)."""
    src = EXAMPLES / "h200_tp2" / "nsys" / "h200_tp2.sqlite.gz"
    whole, cut = ingest_in_batches(src, tmp_path, monkeypatch)
    out = {1 << 30: whole, 777: cut}
    q = (
        "SELECT kind, start_ns, end_ns, correlation, busy_ns, step_busy_ns FROM read_parquet($f) "
        "WHERE busy_ns IS NOT NULL ORDER BY ALL"
    )
    a = duckdb.execute(q, {"f": str(out[1 << 30])}).fetchall()
    b = duckdb.execute(q, {"f": str(out[777])}).fetchall()
    assert len(a) > 1000 and a == b


# --------------------------------------------------------------------------- older runs


def test_runs_without_the_columns_give_the_same_answers(tmp_path: Path) -> None:
    """A run written before busy_ns existed (the columns dropped from a new one): the
    queries merge its intervals themselves and answer the same."""
    src = EXAMPLES / "h200_tp2" / "nsys" / "h200_tp2.sqlite.gz"
    new = tmp_path / "new.parquet"
    ingest([src], new, jobs=1)
    pf = pq.ParquetFile(new)
    old = tmp_path / "old.parquet"
    table = pf.read().drop_columns(["busy_ns", "step_busy_ns"])
    pq.write_table(table.replace_schema_metadata(pf.schema_arrow.metadata), old)
    for q in ("phase_breakdown", "step_series"):
        a, b = run_query(q, [new]), run_query(q, [old])
        assert len(a) > 0
        assert a.equals(b), q
    # The DuckDB CLI path of tracekit shell: its set-up SQL adds the columns too.
    con = duckdb.connect()
    columns = con.read_parquet(str(old)).columns
    con.execute(init_sql([old], list_queries(), columns))
    assert con.sql("SELECT * FROM phase_breakdown").df().equals(run_query("phase_breakdown", [new]))


def test_added_columns_match_the_schema() -> None:
    types = {f.name: f.type for f in SCHEMA}
    duck = {"BIGINT": pa.int64(), "INTEGER": pa.int32(), "VARCHAR": pa.string(), "BOOLEAN": pa.bool_()}
    for name, sql_type in ADDED_COLUMNS:
        assert types[name] == duck[sql_type]
