"""Every shared Nsight export and Kineto trace ingests end to end; per-rank kernel
counts, NCCL kernel counts and kernel time in the Parquet equal raw queries on the
source files (sqlite3 / json), and the run metadata is complete."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import duckdb
import pytest

from tracekit.ingest import ingest, read_metadata

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
NSYS = sorted((SHARED / "nsys").rglob("*.sqlite")) if SHARED.exists() else []


def _raw_nsys(path: Path) -> dict[str, object]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        if "CUPTI_ACTIVITY_KIND_KERNEL" not in tables:
            return {"kernels": 0, "nccl": 0, "kernel_ns": 0, "per_pid": {}}
        k = "CUPTI_ACTIVITY_KIND_KERNEL"
        n, ns = con.execute(f"select count(*), coalesce(sum(end - start), 0) from {k}").fetchone()
        nccl = con.execute(
            f"select count(*) from {k} join StringIds s on s.id = {k}.demangledName "
            "where s.value like '%nccl%'"
        ).fetchone()[0]
        per_pid = dict(con.execute(f"select (globalPid >> 24) & 16777215, count(*) from {k} group by 1"))
        return {"kernels": n, "nccl": nccl, "kernel_ns": ns, "per_pid": per_pid}
    finally:
        con.close()


@pytest.mark.parametrize("src", NSYS, ids=lambda p: str(p.relative_to(SHARED / "nsys")))
def test_every_shared_nsys_export_ingests(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.parquet"
    ingest([src], out, jobs=1)
    raw = _raw_nsys(src)
    got = duckdb.sql(
        f"select count(*), coalesce(sum(dur_ns), 0), count(*) filter (where category = 'communication') "
        f"from '{out}' where kind = 'kernel'"
    ).fetchall()[0]
    assert got[0] == raw["kernels"]
    assert got[1] == raw["kernel_ns"]
    assert got[2] == raw["nccl"]
    per_pid = dict(duckdb.sql(f"select pid, count(*) from '{out}' where kind = 'kernel' group by 1").fetchall())
    assert per_pid == raw["per_pid"]
    # One rank per GPU-using process, numbered from 0.
    ranks = [r[0] for r in duckdb.sql(f"select distinct rank from '{out}' where kind = 'kernel' order by 1").fetchall()]
    assert ranks == list(range(len(raw["per_pid"])))
    md = read_metadata(out)
    assert md["kernels"] == raw["kernels"]
    assert md["schema_version"] == 1 and md["sources"][0]["format"] == "nsys-sqlite"
    if raw["kernels"]:
        assert 0.0 <= md["coverage"]["phase"] <= 1.0


def test_two_rank_torchrun_export_has_two_ranks(tmp_path: Path) -> None:
    src = SHARED / "nsys" / "mfu_2gpu_before.sqlite"
    if not src.exists():
        pytest.skip("shared traces absent")
    out = tmp_path / "run.parquet"
    ingest([src], out, jobs=1)
    rows = duckdb.sql(
        f"select rank, count(*) from '{out}' where kind = 'kernel' and collective = 'SendRecv' group by 1 order by 1"
    ).fetchall()
    con = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    raw = con.execute(
        "select count(*) from CUPTI_ACTIVITY_KIND_KERNEL k join StringIds s on s.id = k.demangledName "
        "where s.value like '%SendRecv%'"
    ).fetchone()[0]
    assert [r[0] for r in rows] == [0, 1]
    assert sum(r[1] for r in rows) == raw == 66


def test_dlrm_eight_rank_files_are_one_run(tmp_path: Path) -> None:
    import tarfile

    tgz = SHARED / "kineto" / "param-dlrm-8rank" / "dlrm_kineto.tar.gz"
    if not tgz.exists():
        pytest.skip("shared traces absent")
    with tarfile.open(tgz) as tf:
        tf.extractall(tmp_path / "in", filter="data")
    files = sorted(p for p in (tmp_path / "in").rglob("*.json*") if p.is_file())
    expected: dict[int, int] = {}
    for f in files:
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt") as fh:
            doc = json.load(fh)
        rank = doc["distributedInfo"]["rank"]
        expected[rank] = sum(1 for e in doc["traceEvents"] if e.get("cat") == "kernel")
    out = tmp_path / "dlrm.parquet"
    res = ingest([tmp_path / "in"], out, jobs=2)
    got = dict(duckdb.sql(f"select rank, count(*) from '{out}' where kind = 'kernel' group by 1").fetchall())
    assert got == expected
    assert len(got) == 8 and res.metadata["world_size"] == 8
