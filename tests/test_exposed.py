"""exposed_ns: a communication kernel's duration minus the part of its interval that
the compute kernels of its (rank, device) cover, computed at ingest.

Expected values: hand-worked intervals and a plain-Python interval merge for the NumPy
functions; on real traces, the covered time computed in DuckDB on the same Parquet by
the SQL the comm_* queries used before the column existed (1 ms bucket joins and a
window over the clipped pieces), and per rank a plain-Python union over the kernels
read back as plain rows; never tracekit.exposed itself.
"""

from __future__ import annotations

import doctest
import gzip
import json
import shutil
import sqlite3
import tarfile
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_cases import ingest_case, ingest_in_batches
from oracle import union_length as _union

import tracekit.exposed as exposed
from tracekit.exposed import covered_arrays, covered_in, exposed_column, merge_intervals
from tracekit.ingest import ingest
from tracekit.shell import init_sql
from tracekit.sql import list_queries, run_query

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"
EXAMPLES = ROOT / "examples" / "traces"
TP2_NSYS = EXAMPLES / "h200_tp2" / "nsys" / "h200_tp2.sqlite.gz"
MFU = SHARED / "nsys" / "mfu_2gpu_before.sqlite"
MFU_AFTER = SHARED / "nsys" / "mfu_2gpu_after.sqlite"
HTA = SHARED / "kineto" / "hta" / "nccl_data.json.gz"
HTA_CONTROL = SHARED / "kineto" / "hta" / "trace_diff_control.json.gz"
DLRM = SHARED / "kineto" / "param-dlrm-8rank" / "dlrm_kineto.tar.gz"



def _covered(a: int, b: int, intervals: list[tuple[int, int]]) -> int:
    """Length of [a, b) covered by the union of ``intervals``: clip, then merge."""
    return _union([(max(s, a), min(e, b)) for s, e in intervals if s < b and e > a])


# --------------------------------------------------------------------------- NumPy


def test_doctests() -> None:
    assert doctest.testmod(exposed).failed == 0


def test_hand_made_intervals() -> None:
    """Worked by hand: nested, overlapping, touching, identical, empty, inverted."""
    k = [(0, 10), (2, 5), (8, 14), (14, 20), (25, 30), (25, 30), (40, 40), (50, 45)]
    s, e = merge_intervals(np.array([x[0] for x in k]), np.array([x[1] for x in k]))
    # [0, 20) (nested, overlapping and touching merge), [25, 30), and two empty ones
    assert list(zip(s.tolist(), e.tolist(), strict=True)) == [(0, 20), (25, 30), (40, 40), (50, 50)]
    comm = [
        # (start, end, covered)
        (0, 20, 20),  # exactly the first merged interval
        (-5, 3, 3),  # starts before every compute kernel
        (18, 27, 4),  # [18, 20) and [25, 27)
        (20, 25, 0),  # the gap, touching both sides
        (10, 60, 15),  # the rest of [0, 20), all of [25, 30)
        (30, 30, 0),  # empty
        (29, 28, 0),  # ends before it starts
        (100, 200, 0),  # after everything
    ]
    got = covered_in(np.array([c[0] for c in comm]), np.array([c[1] for c in comm]), s, e)
    assert got.tolist() == [c[2] for c in comm]
    # No compute kernel at all: nothing covered.
    none = np.zeros(0, np.int64)
    assert covered_in(np.array([0, 5]), np.array([10, 9]), none, none).tolist() == [0, 0]


def test_groups_are_devices() -> None:
    """Compute kernels cover only the communication kernels of their own group; a
    negative group covers and is covered by nothing."""
    c_start, c_end = np.array([0, 0, 0, 0, 0]), np.array([10, 10, 10, 10, 10])
    c_group = np.array([0, 1, 2, -1, 0])
    k_start = np.array([2, 0, 5, 0, 4])
    k_end = np.array([4, 10, 8, 10, 9])
    k_group = np.array([0, 1, 0, -1, 0])
    # group 0: [2, 4) and [4, 9) touch, [5, 8) nested -> [2, 9) = 7; group 1: all 10;
    # group 2 has no compute kernels; group -1 is no group.
    assert covered_arrays(c_start, c_end, c_group, k_start, k_end, k_group).tolist() == [
        7,
        10,
        0,
        0,
        7,
    ]


def test_random_intervals_against_a_plain_merge() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        nk, nc = int(rng.integers(0, 200)), int(rng.integers(1, 40))
        k_start = rng.integers(0, 300, nk) * 1_000 + 10**15
        k_end = k_start + rng.choice([-500, 0, 1, 500, 7_000, 40_000], nk)
        k_group = rng.integers(-1, 4, nk)
        c_start = rng.integers(0, 300, nc) * 1_000 + 10**15
        c_end = c_start + rng.choice([0, 300, 5_000, 80_000], nc)
        c_group = rng.integers(-1, 4, nc)
        got = covered_arrays(c_start, c_end, c_group, k_start, k_end, k_group)
        for i in range(nc):
            if c_group[i] < 0:
                assert got[i] == 0
                continue
            mine = [
                (int(s), int(e))
                for s, e, g in zip(k_start, k_end, k_group, strict=True)
                if g == c_group[i]
            ]
            assert got[i] == _covered(int(c_start[i]), int(c_end[i]), mine)


def test_exposed_column_on_a_small_table() -> None:
    """Only kernels cover (not memcpy), only compute kernels (not other communication
    kernels), only on the same rank and device; NULL rank, device or duration."""
    rows = [
        # kind, category, rank, device, start, end, dur, expected exposed_ns
        ("kernel", "communication", 0, 0, 0, 100, 100, 40),  # [10, 40) + [50, 80) covered
        ("kernel", "gemm", 0, 0, 10, 40, 30, None),
        ("kernel", None, 0, 0, 50, 80, 30, None),  # NULL category is compute
        ("kernel", "communication", 0, 0, 30, 60, 30, 10),  # [30, 40) + [50, 60) covered
        ("memcpy", "memory", 0, 0, 0, 100, 100, None),  # not a kernel
        ("kernel", "gemm", 0, 1, 0, 100, 100, None),  # other device
        ("kernel", "gemm", 1, 0, 0, 100, 100, None),  # other rank
        ("kernel", "communication", 1, 1, 0, 100, 100, 100),  # nothing on (1, 1)
        ("kernel", "communication", 0, None, 0, 100, 100, 100),  # NULL device: never covered
        ("kernel", "communication", None, 0, 0, 100, 100, 100),  # NULL rank: never covered
        ("kernel", "communication", 0, 0, 0, 100, None, None),  # NULL duration
        ("range", None, 0, None, 0, 100, 100, None),
    ]
    t = pa.table(
        {
            "kind": [r[0] for r in rows],
            "category": [r[1] for r in rows],
            "rank": pa.array([r[2] for r in rows], pa.int32()),
            "device": pa.array([r[3] for r in rows], pa.int32()),
            "start_ns": pa.array([r[4] for r in rows], pa.int64()),
            "end_ns": pa.array([r[5] for r in rows], pa.int64()),
            "dur_ns": pa.array([r[6] for r in rows], pa.int64()),
        }
    )
    assert exposed_column(t).to_pylist() == [r[7] for r in rows]


# --------------------------------------------------------------------------- real traces

# The comm_* queries' exposed time before the column existed, on one Parquet file.
_ORACLE = """
WITH events AS (SELECT * FROM read_parquet($f)),
comm AS (
    SELECT run, rank, device, stream, start_ns, end_ns, dur_ns, exposed_ns,
           COALESCE(collective, short_name, name) AS collective,
           row_number() OVER (
               PARTITION BY run, rank, COALESCE(collective, short_name, name)
               ORDER BY start_ns, end_ns, stream
           ) - 1 AS seq
    FROM events
    WHERE kind = 'kernel' AND category = 'communication'
),
comm_near AS (
    SELECT run, rank, device, collective, seq, start_ns AS c_start, end_ns AS c_end,
           unnest(range((start_ns - 1000000) // 1000000, end_ns // 1000000 + 1)) AS bucket
    FROM comm
    WHERE device IS NOT NULL
),
comm_in AS (
    SELECT run, rank, device, collective, seq, start_ns AS c_start, end_ns AS c_end,
           unnest(range(start_ns // 1000000, end_ns // 1000000 + 1)) AS bucket
    FROM comm
    WHERE device IS NOT NULL
),
overlap AS (
    SELECT s.run, s.rank, s.collective, s.seq,
           GREATEST(k.start_ns, s.c_start) AS o_start, LEAST(k.end_ns, s.c_end) AS o_end
    FROM (
        SELECT run, rank, device, start_ns, end_ns, start_ns // 1000000 AS bucket
        FROM events
        WHERE kind = 'kernel' AND category IS DISTINCT FROM 'communication'
          AND device IS NOT NULL AND end_ns - start_ns <= 1000000
    ) k
    JOIN comm_near s USING (run, rank, device, bucket)
    WHERE k.start_ns < s.c_end AND k.end_ns > s.c_start
    UNION ALL
    SELECT s.run, s.rank, s.collective, s.seq,
           GREATEST(k.start_ns, s.c_start), LEAST(k.end_ns, s.c_end)
    FROM (
        SELECT run, rank, device, start_ns, end_ns,
               unnest(range(start_ns // 1000000, end_ns // 1000000 + 1)) AS bucket
        FROM events
        WHERE kind = 'kernel' AND category IS DISTINCT FROM 'communication'
          AND device IS NOT NULL AND end_ns - start_ns > 1000000
    ) k
    JOIN comm_in s USING (run, rank, device, bucket)
    WHERE k.start_ns < s.c_end AND k.end_ns > s.c_start
      AND k.bucket = GREATEST(k.start_ns // 1000000, s.c_start // 1000000)
),
overlap_reach AS (
    SELECT run, rank, collective, seq, o_start, o_end,
           MAX(o_end) OVER (
               PARTITION BY run, rank, collective, seq ORDER BY o_start
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
           ) AS reach
    FROM overlap
),
covered AS (
    SELECT run, rank, collective, seq,
           SUM(GREATEST(o_end - GREATEST(o_start, COALESCE(reach, o_start)), 0)) AS covered_ns
    FROM overlap_reach
    GROUP BY run, rank, collective, seq
)
SELECT count(*),
       count(*) FILTER (WHERE c.exposed_ns IS DISTINCT FROM c.dur_ns - COALESCE(v.covered_ns, 0)),
       count(*) FILTER (WHERE v.covered_ns > 0)
FROM comm c
LEFT JOIN covered v USING (run, rank, collective, seq)
"""


def _check_run(run: Path) -> tuple[int, int]:
    """(communication kernels, how many of them compute covers), after checking every
    one against the old SQL and that no other row has a value."""
    con = duckdb.connect()
    f = {"f": str(run)}
    n, bad, covered = con.execute(_ORACLE, f).fetchone()  # type: ignore[misc]
    assert n > 0 and bad == 0, (run, n, bad)
    stray = con.execute(
        "SELECT count(*) FROM read_parquet($f) "
        "WHERE (exposed_ns IS NOT NULL) <> (kind = 'kernel' AND category = 'communication' AND dur_ns IS NOT NULL)",
        f,
    ).fetchone()
    assert stray == (0,), run
    return n, covered


def _shifted_export(tmp_path: Path) -> Path:
    """The h200_tp2 export with a third of its kernels moved 30 µs earlier and a fifth
    15 µs later: compute kernels then overlap communication kernels in every way
    (the real traces from tensor-parallel decode run them one after the other)."""
    plain = tmp_path / "shifted.sqlite"
    with gzip.open(TP2_NSYS, "rb") as fh, plain.open("wb") as dst:
        shutil.copyfileobj(fh, dst)
    con = sqlite3.connect(plain)
    con.execute(
        'UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = start - 30000, "end" = "end" - 30000 WHERE rowid % 3 = 0'
    )
    con.execute(
        'UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = start + 15000, "end" = "end" + 15000 WHERE rowid % 5 = 0'
    )
    con.commit()
    con.close()
    return plain


def _dlrm(tmp_path: Path) -> list[Path]:
    with tarfile.open(DLRM) as tar:
        tar.extractall(tmp_path, filter="data")
    return [tmp_path / "dlrm_kineto"]


CASES = [
    # (id, inputs (a callable for made ones), nsys batch rows or None, compute overlaps)
    ("nsys_tp2", lambda _: [TP2_NSYS], None, False),
    ("nsys_tp2_shifted_tiny_batches", lambda p: [_shifted_export(p)], 777, True),
    ("nsys_tp4_graph_tiny_batches", lambda _: [EXAMPLES / "h200_tp4_graph" / "nsys"], 777, False),
    ("nsys_mfu_tiny_batches", lambda _: [MFU], 999, False),
    ("nsys_two_files_renumbered", lambda _: [MFU, MFU_AFTER], None, False),
    ("kineto_tp2", lambda _: [EXAMPLES / "h200_tp2" / "torch"], None, False),
    ("kineto_hta", lambda _: [HTA], None, True),
    ("kineto_hta_control", lambda _: [HTA_CONTROL], None, True),
    ("kineto_dlrm_8_files", _dlrm, None, True),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_equals_the_old_sql(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _, make, batch_rows, overlaps = case
    run = ingest_case(make, batch_rows, tmp_path, monkeypatch)
    n, covered = _check_run(run)
    assert (covered > 0) == overlaps, (n, covered)


def test_per_rank_plain_python(tmp_path: Path) -> None:
    """Each communication kernel of the shifted export (two ranks, one device each):
    its duration minus the plain-Python union of the compute kernels of its rank and
    device clipped to it, from the rows read back."""
    run = tmp_path / "run.parquet"
    ingest([_shifted_export(tmp_path)], run, jobs=1)
    rows = (
        duckdb.connect()
        .execute(
            "SELECT rank, device, category = 'communication', start_ns, end_ns, dur_ns, exposed_ns "
            "FROM read_parquet($f) WHERE kind = 'kernel'",
            {"f": str(run)},
        )
        .fetchall()
    )
    compute: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for rank, device, comm, s, e, _, _ in rows:
        if not comm:
            compute[(rank, device)].append((s, e))
    comm_rows = [r for r in rows if r[2]]
    assert {r[0] for r in comm_rows} == {0, 1}
    covered = 0
    for rank, device, _, s, e, dur, got in comm_rows:
        want = dur - _covered(s, e, compute[(rank, device)])
        assert got == want
        covered += want < dur
    assert covered > len(comm_rows) // 4


def test_nsys_batch_boundaries_do_not_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _shifted_export(tmp_path)
    whole, cut = ingest_in_batches(src, tmp_path, monkeypatch)
    out = {1 << 30: whole, 777: cut}
    q = (
        "SELECT kind, start_ns, end_ns, correlation, exposed_ns, launch_first FROM read_parquet($f) "
        "WHERE kind IN ('kernel', 'memcpy', 'memset') ORDER BY ALL"
    )
    a = duckdb.connect().execute(q, {"f": str(out[1 << 30])}).fetchall()
    b = duckdb.connect().execute(q, {"f": str(out[777])}).fetchall()
    assert len(a) > 1000 and a == b


# --------------------------------------------------------------------------- queries


def _without(new: Path, old: Path, columns: list[str], run: str | None = None) -> None:
    """``new`` as an older version wrote it: without ``columns`` (and named ``run``)."""
    pf = pq.ParquetFile(new)
    table = pf.read().drop_columns(columns)
    if run is not None:
        i = table.column_names.index("run")
        table = table.set_column(i, "run", pa.array([run] * table.num_rows, pa.string()))
    pq.write_table(table.replace_schema_metadata(pf.schema_arrow.metadata), old)


COMM_QUERIES = (
    "comm_by_phase",
    "comm_by_op",
    "comm_by_rank",
    "comm_collectives",
    "phase_breakdown",
)


@pytest.mark.parametrize(
    "dropped",
    [["exposed_ns", "launch_first"], ["busy_ns", "step_busy_ns", "exposed_ns", "launch_first"]],
    ids=["previous_version", "before_busy"],
)
def test_runs_without_the_columns_give_the_same_answers(dropped: list[str], tmp_path: Path) -> None:
    """A run written before exposed_ns and launch_first (and one before busy_ns too):
    the queries compute them the old way and answer the same."""
    new = tmp_path / "new.parquet"
    ingest([_shifted_export(tmp_path)], new, jobs=1)
    old = tmp_path / "old.parquet"
    _without(new, old, dropped)
    a_new = {}
    for q in COMM_QUERIES:
        a, b = run_query(q, [new]), run_query(q, [old])
        assert len(a) > 0
        assert a.equals(b), q
        a_new[q] = a
    exposed_ms = run_query("comm_by_rank", [new])["exposed_ms"]
    total_ms = run_query("comm_by_rank", [new])["total_ms"]
    assert (exposed_ms < total_ms).all()  # the shifted kernels do overlap
    # Both kinds of run in one view: each answers for itself, the old one the old way.
    renamed = tmp_path / "renamed.parquet"
    _without(new, renamed, dropped, run="old")
    for q in COMM_QUERIES:
        both = run_query(q, [new, renamed])
        for label, alone in (("shifted", a_new[q]), ("old", a_new[q].assign(run="old"))):
            part = both[both["run"] == label].reset_index(drop=True)
            assert part.equals(alone), (q, label)
    # The DuckDB CLI path of tracekit shell adds the columns too.
    con = duckdb.connect()
    columns = con.read_parquet(str(old)).columns
    con.execute(init_sql([old], list_queries(), columns))
    assert con.sql("SELECT * FROM comm_by_phase").df().equals(run_query("comm_by_phase", [new]))


def _scans(profile: dict) -> list[tuple[str, int]]:  # type: ignore[type-arg]
    """(filters, rows emitted) of every table scan in a DuckDB JSON profile (the keys
    differ between DuckDB versions)."""
    out: list[tuple[str, int]] = []

    def walk(node: dict) -> None:  # type: ignore[type-arg]
        kind = node.get("type") or node.get("operator_type") or node.get("operator_name") or ""
        if "TABLE_SCAN" in str(kind):
            info = node.get("extra_info", {})
            rows = node.get("intermediate_rows", node.get("operator_cardinality", 0))
            out.append((json.dumps(info), int(rows)))
        for child in node.get("children", []):
            walk(child)

    for top in profile.get("operator", [profile]):
        walk(top)
    return out


def test_new_runs_skip_the_fallbacks(tmp_path: Path) -> None:
    """On a run with the columns, the comm fallback reads (almost) no compute kernel
    and phase_breakdown's launch fallback no row: the old work is gone."""
    from tracekit.sql import bind_params, connect, load_query, set_params

    run = tmp_path / "run.parquet"
    ingest([EXAMPLES / "h200_tp4" / "nsys"], run, jobs=1)
    (compute,) = (
        duckdb.connect()
        .execute(
            "SELECT count(*) FROM read_parquet($f) WHERE kind = 'kernel' AND category <> 'communication'",
            {"f": str(run)},
        )
        .fetchone()
    )  # type: ignore[misc]
    assert compute > 10_000
    for name, marker, limit in (
        ("comm_by_phase", "IS DISTINCT FROM 'communication'", 2 * 2048),
        ("phase_breakdown", "launch_first IS NULL", 0),
    ):
        con = connect([run])
        con.execute("SET threads = 1")
        query = load_query(name)
        set_params(con, query, bind_params(query, {}))
        out = tmp_path / f"{name}.json"
        con.execute("PRAGMA enable_profiling = 'json'")
        con.execute(f"PRAGMA profiling_output = '{out}'")
        con.execute(query.sql).fetchall()
        con.execute("PRAGMA disable_profiling")
        con.close()
        scans = [rows for info, rows in _scans(json.loads(out.read_text())) if marker in info]
        assert scans, name
        assert max(scans) <= limit, (name, scans)
