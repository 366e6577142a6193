"""Dask ingest: the same events as a local ingest, as a dataset that DuckDB, Dask,
pyarrow and tracekit's metadata reader all open.  Runs on a LocalCluster; skipped
when dask.distributed is not installed (pip install 'tracekit[dask]')."""

from __future__ import annotations

import tarfile
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

pytest.importorskip("distributed")
from distributed import LocalCluster

from tracekit.dask_ingest import ingest_dask
from tracekit.errors import TracekitError
from tracekit.ingest import ingest, read_metadata

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
DLRM = TRACES / "kineto" / "param-dlrm-8rank" / "dlrm_kineto.tar.gz"
NSYS = TRACES / "nsys" / "mfu_2gpu_before.sqlite"

pytestmark = pytest.mark.skipif(not DLRM.exists(), reason="shared traces not present")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture(scope="module")
def dlrm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dlrm")
    with tarfile.open(DLRM) as tar:
        tar.extractall(d, filter="data")
    return d / "dlrm_kineto"


COLS = (
    "rank, kind, name, start_ns, end_ns, correlation, phase, step, op, path, category, "
    "busy_ns, step_busy_ns, exposed_ns, launch_first"
)


def test_dask_matches_local_ingest(cluster, dlrm: Path, tmp_path: Path) -> None:
    local = ingest([dlrm], tmp_path / "local.parquet", run="dlrm", jobs=1)
    res = ingest_dask([dlrm], tmp_path / "run", cluster, run="dlrm")

    # One part per input file (8 ranks), each a valid tracekit run file.
    files = sorted((tmp_path / "run").glob("*.parquet"))
    assert len(files) == 8 == len(res.parts)
    assert not list((tmp_path / "run").glob(".tracekit-*")), "temporary folder left behind"
    metas = [read_metadata(f) for f in files]
    assert {m["part"]["index"] for m in metas} == set(range(8))
    assert all(m["rows"] == local.rows and m["ranks"] == list(range(8)) for m in metas)
    assert res.ranks == local.ranks == list(range(8))
    assert res.coverage_op == local.coverage_op and res.coverage_phase == local.coverage_phase

    # Same events, row for row (DuckDB over the folder vs the local file).
    con = duckdb.connect()
    diff = con.execute(
        f"select count(*) from ((select {COLS} from read_parquet($a) except all "
        f"select {COLS} from read_parquet($b)) union all (select {COLS} from read_parquet($b) "
        f"except all select {COLS} from read_parquet($a)))",
        {"a": str(tmp_path / "run" / "*.parquet"), "b": str(tmp_path / "local.parquet")},
    ).fetchone()
    assert diff == (0,)
    # Each rank lives in exactly one part.
    per_file = con.execute(
        "select count(distinct rank), count(distinct filename) from read_parquet($a, filename=true)",
        {"a": str(tmp_path / "run" / "*.parquet")},
    ).fetchone()
    assert per_file == (8, 8)

    # pyarrow and Dask read the folder as one table with the events schema.
    assert ds.dataset(tmp_path / "run").count_rows() == local.rows
    dd = pytest.importorskip("dask.dataframe")
    df = dd.read_parquet(str(tmp_path / "run"))
    assert len(df) == local.rows
    assert {"rank", "phase", "op", "path", "dur_ns"} <= set(df.columns)


def test_dask_nsys_ranks_renumbered(cluster, tmp_path: Path) -> None:
    if not NSYS.exists():
        pytest.skip("nsys export not present")
    local = ingest([NSYS], tmp_path / "local.parquet", jobs=1)
    res = ingest_dask([NSYS], tmp_path / "run", cluster)
    assert res.rows == local.rows and res.ranks == local.ranks
    got = duckdb.sql(
        f"select rank, count(*) from read_parquet('{tmp_path / 'run'}/*.parquet') group by 1 order by 1"
    ).fetchall()
    want = duckdb.sql(
        f"select rank, count(*) from read_parquet('{tmp_path / 'local.parquet'}') group by 1 order by 1"
    ).fetchall()
    assert got == want


def test_dask_refuses_non_empty_output(cluster, dlrm: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.parquet").write_bytes(b"x")
    with pytest.raises(TracekitError, match="already holds Parquet files"):
        ingest_dask([dlrm], out, cluster)


def test_dask_worker_error_reaches_client(cluster, tmp_path: Path) -> None:
    bad = tmp_path / "in" / "rank0.json"
    bad.parent.mkdir()
    bad.write_text('{"traceEvents": [')
    with pytest.raises(TracekitError, match="could not be read as JSON"):
        ingest_dask([bad], tmp_path / "run", cluster)
    assert not list((tmp_path / "run").glob("*.parquet"))


def test_dask_unreachable_scheduler(tmp_path: Path, dlrm: Path) -> None:
    with pytest.raises(TracekitError, match="Could not reach the Dask scheduler"):
        ingest_dask([dlrm], tmp_path / "run", "tcp://127.0.0.1:1", connect_timeout="2s")


def test_cli_dask_option(dlrm: Path, tmp_path: Path) -> None:
    """`tracekit ingest --dask ADDRESS` from a shell, against a running scheduler
    reachable over TCP on loopback."""
    import subprocess
    import sys

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
        host="127.0.0.1", dashboard_address=None,
    ) as tcp:
        res = subprocess.run(
            [sys.executable, "-m", "tracekit", "ingest", str(dlrm), "--dask", tcp.scheduler_address,
             "-o", str(tmp_path / "parts"), "--run", "dlrm"],
            capture_output=True, text=True, timeout=300,
        )
    assert res.returncode == 0, res.stderr
    assert "wrote 8 parts" in res.stdout
    n = duckdb.sql(f"select count(distinct rank) from read_parquet('{tmp_path / 'parts'}/*.parquet')").fetchall()[0][0]
    assert n == 8
