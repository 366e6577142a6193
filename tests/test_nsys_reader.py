"""The Nsight Systems reader against real exports and reports in ../shared/traces/nsys.

Expected numbers come from raw SQL on the source .sqlite (Python's sqlite3), or from
the provenance table in shared/traces/README.md, never from the reader itself.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tracekit import schema
from tracekit.errors import TracekitError
from tracekit.readers import nsys

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "nsys"
SQLITES = (
    sorted(p.relative_to(TRACES).as_posix() for p in TRACES.rglob("*.sqlite"))
    if TRACES.is_dir()
    else []
)
TWO_GPU = ["mfu_2gpu_before.sqlite", "mfu_2gpu_after.sqlite", "h100_2gpu_1s.sqlite"]

needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces is absent")
BACKENDS = ["sqlite3"] + (["adbc"] if importlib.util.find_spec("adbc_driver_sqlite") else [])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(nsys._Db, "use_adbc", request.param == "adbc")
    return str(request.param)


@pytest.fixture
def nsys_bin() -> str:
    found = os.environ.get("NSYS") or shutil.which("nsys")
    if not found:
        if os.environ.get("TRACEKIT_REQUIRE_NSYS") == "1":
            pytest.fail(
                "TRACEKIT_REQUIRE_NSYS=1 but nsys is not installed (run .ci/install-nsys.sh)."
            )
        pytest.skip("nsys is not installed (.ci/install-nsys.sh installs it)")
    return found


_cache: dict[tuple[str, str], nsys.RawTrace] = {}


def _read(rel: str, backend: str) -> nsys.RawTrace:
    if (rel, backend) not in _cache:
        saved = nsys._Db.use_adbc
        nsys._Db.use_adbc = backend == "adbc"
        try:
            _cache[(rel, backend)] = nsys.read(TRACES / rel)
        finally:
            nsys._Db.use_adbc = saved
    return _cache[(rel, backend)]


def _sql(db: Path, query: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def _tables(db: Path) -> set[str]:
    return {r[0] for r in _sql(db, "SELECT name FROM sqlite_master WHERE type='table'")}


def _kind(trace: nsys.RawTrace, kind: str) -> pa.Table:
    return trace.table.filter(pc.equal(trace.table["kind"], kind))


def _check_against_sql(trace: nsys.RawTrace, db: Path) -> None:
    """Counts, per-process sums and names of every event kind equal raw SQL on ``db``."""
    tables = _tables(db)
    kernels = _kind(trace, "kernel")
    K = "CUPTI_ACTIVITY_KIND_KERNEL"
    if K in tables:
        per_proc = dict(
            (
                (pid, (n, dur))
                for pid, n, dur in _sql(
                    db,
                    f'SELECT (globalPid >> 24) & 16777215, count(*), sum("end" - start) FROM {K} GROUP BY 1',
                )
            )
        )
        nccl = _sql(
            db,
            f"SELECT count(*) FROM {K} k JOIN StringIds s ON s.id = k.demangledName "
            "WHERE s.value LIKE '%nccl%'",
        )[0][0]
        names = {
            r[0]
            for r in _sql(
                db, f"SELECT DISTINCT s.value FROM {K} k JOIN StringIds s ON s.id = k.demangledName"
            )
        }
    else:
        per_proc, nccl, names = {}, 0, set()
    assert kernels.num_rows == sum(n for n, _ in per_proc.values())
    got = kernels.group_by("pid").aggregate([("pid", "count"), ("start_ns", "count")])
    durs = pc.subtract(kernels["end_ns"], kernels["start_ns"])
    got_dur = pa.table({"pid": kernels["pid"], "d": durs}).group_by("pid").aggregate([("d", "sum")])
    assert {r["pid"]: r["pid_count"] for r in got.to_pylist()} == {
        p: n for p, (n, _) in per_proc.items()
    }
    assert {r["pid"]: r["d_sum"] for r in got_dur.to_pylist()} == {
        p: d for p, (_, d) in per_proc.items()
    }
    assert (
        pc.sum(pc.match_substring(kernels["name"], "nccl", ignore_case=True)).as_py() or 0
    ) == nccl
    assert set(kernels["name"].to_pylist()) == names
    assert kernels["short_name"].null_count == 0
    assert kernels["device"].null_count == 0 and kernels["correlation"].null_count == 0

    for kind, table in (
        ("memcpy", "CUPTI_ACTIVITY_KIND_MEMCPY"),
        ("memset", "CUPTI_ACTIVITY_KIND_MEMSET"),
        ("sync", "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"),
    ):
        want = _sql(db, f"SELECT count(*) FROM {table}")[0][0] if table in tables else 0
        assert _kind(trace, kind).num_rows == want, kind
    if "CUPTI_ACTIVITY_KIND_MEMCPY" in tables:
        want_bytes = _sql(db, "SELECT total(bytes) FROM CUPTI_ACTIVITY_KIND_MEMCPY")[0][0]
        assert (pc.sum(_kind(trace, "memcpy")["bytes"]).as_py() or 0) == want_bytes

    runtime = _kind(trace, "runtime")
    R = "CUPTI_ACTIVITY_KIND_RUNTIME"
    want_rt = (
        {
            (pid, tid, name): n
            for pid, tid, name, n in _sql(
                db,
                f"SELECT (globalTid >> 24) & 16777215, globalTid & 16777215, s.value, count(*) "
                f"FROM {R} r JOIN StringIds s ON s.id = r.nameId GROUP BY 1, 2, 3",
            )
        }
        if R in tables
        else {}
    )
    got_rt = runtime.group_by(["pid", "tid", "name"]).aggregate([("pid", "count")]).to_pylist()
    assert {(r["pid"], r["tid"], r["name"]): r["pid_count"] for r in got_rt} == want_rt
    # The decoded pids are OS pids: every one is a process the export lists.
    if "PROCESSES" in tables:
        known = {r[0] for r in _sql(db, "SELECT pid FROM PROCESSES")}
        assert set(pc.unique(trace.table["pid"]).to_pylist()) <= known

    ranges = _kind(trace, "range")
    if "NVTX_EVENTS" in tables:
        cols = {r[1] for r in _sql(db, "PRAGMA table_info(NVTX_EVENTS)")}
        text = "coalesce(s.value, n.text)" if "textId" in cols else "n.text"
        join = "LEFT JOIN StringIds s ON s.id = n.textId" if "textId" in cols else ""
        want_nv = {
            (name, et == 59): c
            for name, et, c in _sql(
                db,
                f"SELECT {text}, eventType, count(*) FROM NVTX_EVENTS n {join} "
                "WHERE eventType IN (59, 60) GROUP BY 1, 2",
            )
        }
    else:
        want_nv = {}
    got_nv = ranges.group_by(["name", "nested"]).aggregate([("pid", "count")]).to_pylist()
    assert {(r["name"], r["nested"]): r["pid_count"] for r in got_nv} == want_nv
    assert ranges["tid"].null_count == 0

    # Intervals are whole ns on one clock, never inverted.
    assert trace.table["start_ns"].type == pa.int64()
    assert (
        pc.all(pc.greater_equal(trace.table["end_ns"], trace.table["start_ns"])).as_py()
        is not False
    )
    schema.conform(trace.table)  # the table fits the events schema


@needs_traces
@pytest.mark.parametrize("rel", SQLITES)
def test_every_shared_sqlite_matches_raw_sql(rel: str, backend: str) -> None:
    trace = _read(rel, backend)
    _check_against_sql(trace, TRACES / rel)
    meta = trace.meta
    assert meta["format"] == "nsys-sqlite" and meta["profiler"] == "nsys"
    assert meta["profiler_version"] and meta["profiler_version"][:4] in {
        "2022",
        "2024",
        "2025",
        "2026",
    }
    gpu_pids = set(
        pc.unique(
            trace.table.filter(pc.is_in(trace.table["kind"], pa.array(list(schema.GPU_KINDS))))[
                "pid"
            ]
        ).to_pylist()
    )
    assert meta["world_size"] == (len(gpu_pids) or None)
    assert {p["pid"] for p in meta["processes"] if p["rank"] is not None} == gpu_pids


@needs_traces
@pytest.mark.parametrize("rel", SQLITES)
def test_gpu_groups_match_raw_sql(rel: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks come from per-(process, device) counts of GPU activity, aggregated from
    the narrow GPU columns (read once, also for busy time): the same as SQL GROUP BY
    on the raw tables, in windows smaller than the tables."""
    monkeypatch.setattr(nsys, "BATCH_ROWS", 1000)
    acc: dict[tuple, list] = {}
    tables = _tables(TRACES / rel)
    for table in ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY", "CUPTI_ACTIVITY_KIND_MEMSET"):
        if table not in tables:
            continue
        rows = _sql(
            TRACES / rel,
            f'SELECT ("globalPid" >> 24) & 16777215, deviceId, count(*), min(start) '
            f"FROM {table} GROUP BY 1, 2",
        )
        for pid, dev, count, first in rows:
            a = acc.setdefault((pid, dev), [0, 0, None])
            a[1] += count
            if table.endswith("KERNEL"):
                a[0], a[2] = count, first
    want = sorted(((p, d, k, n, f) for (p, d), (k, n, f) in acc.items()), key=str)
    with nsys.open_export(TRACES / rel) as ex:
        got = sorted(ex._gpu_groups(), key=str)
        spans = ex.gpu_spans()
    assert got == want
    assert sum(n for _, n, _ in spans.kinds) == sum(g[3] for g in want) == len(spans.start)


@needs_traces
def test_readme_counts() -> None:
    """Kernel/NVTX/NCCL counts named in shared/traces/README.md."""
    want = {
        "mfu_2gpu_before.sqlite": (4010, 19118, 66),
        "mfu_2gpu_after.sqlite": (3587, 17113, 62),
        "h100_2gpu_1s.sqlite": (3442, 16782, 0),
        "fuser-2024.6/report1.sqlite": (19, 639, 0),
        "fuser-2025.1/report1.sqlite": (18, 13513, 0),
        "pipit-saxpy-2022.2.sqlite": (5, None, 0),
        "pipit-cloverleaf-2024.5-no-nvtx.sqlite": (1312, 0, 0),
    }
    for rel, (k, n, nccl) in want.items():
        t = _read(rel, "sqlite3").table
        kernels = t.filter(pc.equal(t["kind"], "kernel"))
        assert kernels.num_rows == k, rel
        assert (
            pc.sum(pc.match_substring(kernels["name"], "nccl", ignore_case=True)).as_py() or 0
        ) == nccl, rel
        if n is not None:  # README counts NVTX events; these files hold only ranges
            assert t.filter(pc.equal(t["kind"], "range")).num_rows == n, rel


@needs_traces
@pytest.mark.parametrize("rel", TWO_GPU)
def test_torchrun_two_gpu_ranks(rel: str) -> None:
    trace = _read(rel, "sqlite3")
    meta, t = trace.meta, trace.table
    assert meta["world_size"] == 2 and meta["rank_source"] == "order"
    assert {p["rank"] for p in meta["processes"] if p["rank"] is not None} == {0, 1}
    # Rank r is the process that ran its kernels on device r (raw SQL).
    want = dict(
        _sql(
            TRACES / rel,
            "SELECT deviceId, (globalPid >> 24) & 16777215 FROM "
            "CUPTI_ACTIVITY_KIND_KERNEL GROUP BY 1, 2",
        )
    )
    for p in meta["processes"]:
        if p["rank"] is not None:
            assert want[p["rank"]] == p["pid"]
    # Every event of a GPU process carries its rank (runtime and NVTX too).
    for p in meta["processes"]:
        sel = t.filter(pc.equal(t["pid"], p["pid"]))
        assert set(sel["rank"].to_pylist()) == {p["rank"]}
    assert "gpus" not in meta and any("TARGET_INFO_GPU" in w for w in meta["warnings"])


@needs_traces
def test_meta_gpus_versions_and_explicit_rank() -> None:
    fuser = _read("fuser-2024.6/report1.sqlite", "sqlite3").meta
    assert fuser["gpus"] == {"0": "NVIDIA H100 80GB HBM3"}
    assert fuser["profiler_version"] == "2024.6.2.25"
    # The launch recorded RANK=0 for its one GPU process.
    assert fuser["rank_source"] == "explicit" and fuser["world_size"] == 1
    saxpy = _read("pipit-saxpy-2022.2.sqlite", "sqlite3").meta  # EXPORT_META_DATA, old schema
    assert saxpy["profiler_version"] == "2022.2.1.31"
    assert saxpy["gpus"] == {"0": "NVIDIA A100-SXM4-40GB"}
    h200 = _read("fuser-2025.1/report1.sqlite", "sqlite3").meta
    assert h200["gpus"] == {"0": "NVIDIA H200"}
    # Two processes, one of them without GPU work: it has no rank.
    assert sorted((p["rank"] is None) for p in h200["processes"]) == [False, True]


@needs_traces
def test_nvtx_domains_payload_and_nesting() -> None:
    t = _read("pipit-saxpy-2022.2.sqlite", "sqlite3").table
    ranges = t.filter(pc.equal(t["kind"], "range"))
    want = dict(
        _sql(
            TRACES / "pipit-saxpy-2022.2.sqlite",
            "SELECT d.text, count(*) FROM NVTX_EVENTS n JOIN NVTX_EVENTS d "
            "ON d.eventType = 75 AND d.domainId = n.domainId WHERE n.eventType = 59 GROUP BY 1",
        )
    )
    got = (
        ranges.filter(ranges["domain"].is_valid()).group_by("domain").aggregate([("pid", "count")])
    )
    assert {r["domain"]: r["pid_count"] for r in got.to_pylist()} == want
    assert pc.all(ranges["nested"]).as_py()
    # mfu ranges in domain 1 have no domain-create event in the window: no domain name.
    t2 = _read("mfu_2gpu_before.sqlite", "sqlite3").table
    assert t2.filter(pc.equal(t2["kind"], "range"))["domain"].null_count == 19118


@needs_traces
def test_unclosed_range_is_clamped(tmp_path: Path) -> None:
    db = tmp_path / "unclosed.sqlite"
    shutil.copy(TRACES / "pipit-saxpy-2022.2.sqlite", db)
    conn = sqlite3.connect(db)
    conn.execute(
        'UPDATE NVTX_EVENTS SET "end" = NULL WHERE rowid = '
        "(SELECT min(rowid) FROM NVTX_EVENTS WHERE eventType = 59)"
    )
    conn.commit()
    last = conn.execute(
        'SELECT max(m) FROM (SELECT max("end") m FROM CUPTI_ACTIVITY_KIND_KERNEL UNION ALL '
        'SELECT max("end") FROM CUPTI_ACTIVITY_KIND_RUNTIME UNION ALL SELECT max("end") FROM '
        'CUPTI_ACTIVITY_KIND_MEMCPY UNION ALL SELECT max("end") FROM NVTX_EVENTS WHERE eventType IN (59, 60))'
    ).fetchone()[0]
    conn.close()
    trace = nsys.read(db)
    ranges = _kind(trace, "range")
    assert ranges.num_rows == 22 and ranges["end_ns"].null_count == 0
    assert pc.max(ranges["end_ns"]).as_py() == last
    assert any("no end" in w for w in trace.meta["warnings"])


# --------------------------------------------------------------------------- bad input


def _message(path: Path) -> str:
    with pytest.raises(TracekitError) as info:
        nsys.read(path)
    msg = str(info.value)
    assert msg.endswith(".") and "\n" not in msg
    return msg


def test_missing_file(tmp_path: Path) -> None:
    assert "does not exist" in _message(tmp_path / "nope.sqlite")


@needs_traces
def test_truncated_sqlite(tmp_path: Path) -> None:
    bad = tmp_path / "trunc.sqlite"
    bad.write_bytes((TRACES / "h100_2gpu_1s.sqlite").read_bytes()[:4096])
    assert "truncated or corrupt" in _message(bad)


def test_random_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "noise.sqlite"
    bad.write_bytes(random.Random(0).randbytes(8192))
    assert "not an SQLite database" in _message(bad)


def test_sqlite_that_is_not_an_export(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE foo (a INTEGER)")
    conn.commit()
    conn.close()
    assert "not an Nsight Systems export" in _message(db)


@needs_traces
def test_empty_export_with_only_nvtx(tmp_path: Path) -> None:
    """A valid export whose only event table is an empty NVTX_EVENTS reads as 0 rows."""
    src = TRACES / "fuser-2025.1" / "report1.sqlite"
    ddl = _sql(src, "SELECT sql FROM sqlite_master WHERE name IN ('StringIds', 'NVTX_EVENTS')")
    db = tmp_path / "empty.sqlite"
    conn = sqlite3.connect(db)
    for (stmt,) in ddl:
        conn.execute(stmt)
    conn.commit()
    conn.close()
    trace = nsys.read(db)
    assert trace.table.num_rows == 0 and trace.meta["world_size"] is None
    schema.conform(trace.table)


def test_report_without_nsys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rep = tmp_path / "r.nsys-rep"
    rep.write_bytes(b"\0" * 64)
    monkeypatch.delenv("NSYS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    msg = _message(rep)
    assert "not installed" in msg and "nsys export --type sqlite" in msg


# --------------------------------------------------------------------------- nsys-rep


@pytest.mark.nsys
@needs_traces
@pytest.mark.parametrize(
    "rel,kernels,runtime",
    [
        ("conductor-2021.5.nsys-rep", 187, None),
        ("alpa-2022.1-jax.nsys-rep", 14, 777),
        ("alpa-2022.1-nccl-init.nsys-rep", 0, None),
    ],
)
def test_report_exports_and_matches(
    rel: str,
    kernels: int,
    runtime: int | None,
    nsys_bin: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    trace = nsys.read(TRACES / rel)
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary export is gone
    assert trace.meta["format"] == "nsys-rep" and trace.meta["source"].endswith(rel)
    assert _kind(trace, "kernel").num_rows == kernels
    if runtime is not None:
        assert _kind(trace, "runtime").num_rows == runtime
    # Independent export with the same nsys, checked by raw SQL.
    out = tmp_path / "ref.sqlite"
    subprocess.run(
        [nsys_bin, "export", "--type", "sqlite", "--output", str(out), str(TRACES / rel)],
        check=True,
        capture_output=True,
    )
    _check_against_sql(trace, out)


@pytest.mark.nsys
@needs_traces
def test_report_too_new_is_refused(
    nsys_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    msg = _message(TRACES / "fuser-2024.6" / "report1.nsys-rep")
    assert "cannot export report1.nsys-rep" in msg
    assert "newer Nsight Systems" in msg and "nsys export --type sqlite" in msg
    assert list(tmp_path.iterdir()) == []  # no partial output left behind
