"""Nsight exports stream through ingest in row batches (tracekit.readers.nsys.Export):
batch boundaries must not change a single value, the NVTX spill must not outlive the
run, and inputs whose ranks are numbered per file are renumbered in the one output.

Expected values: the same ingest with one batch per table (batching cannot be
allowed to matter), and counts straight from the raw SQLite."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import tempfile
from pathlib import Path

import duckdb
import pytest

from tracekit.ingest import ingest
from tracekit.readers import nsys

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces" / "nsys"
CASES = [
    SHARED / "mfu_2gpu_before.sqlite",  # PyTorch emit_nvtx-style ranges, 2 processes
    ROOT / "examples" / "traces" / "h200_tp4_graph" / "nsys" / "h200_tp4_graph.sqlite.gz",  # graphs, markers
    ROOT / "examples" / "traces" / "h200_tp2" / "nsys" / "h200_tp2.sqlite.gz",
]


def _rows(path: Path) -> list[tuple[object, ...]]:
    con = duckdb.connect()
    cols = [r[0] for r in con.execute(f"describe select * from '{path}'").fetchall()]
    sel = ", ".join(f'"{c}"' for c in cols)
    return con.execute(f"select {sel} from '{path}' order by all").fetchall()


@pytest.mark.parametrize("src", CASES, ids=lambda p: p.name)
def test_batch_size_does_not_change_the_output(src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not src.exists():
        pytest.skip(f"{src} not present")
    whole = tmp_path / "whole.parquet"
    monkeypatch.setattr(nsys, "BATCH_ROWS", 1 << 30)
    ingest([src], whole, jobs=1)
    small = tmp_path / "small.parquet"
    monkeypatch.setattr(nsys, "BATCH_ROWS", 777)  # many windows per table, ranges cut mid-stack
    ingest([src], small, jobs=1)
    a, b = _rows(whole), _rows(small)
    assert len(a) > 1000
    assert a == b


def test_spill_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = CASES[0]
    if not src.exists():
        pytest.skip("shared traces absent")
    spill_root = tmp_path / "tmp"
    spill_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_root))
    ingest([src], tmp_path / "run.parquet", jobs=1)
    assert list(spill_root.iterdir()) == []


def test_per_file_ranks_are_renumbered(tmp_path: Path) -> None:
    """Two separate two-process exports (ranks by GPU order in each) become ranks
    0-3 of one run, each file's kernels on its own pair of ranks."""
    a = SHARED / "mfu_2gpu_before.sqlite"
    b = SHARED / "mfu_2gpu_after.sqlite"
    if not (a.exists() and b.exists()):
        pytest.skip("shared traces absent")
    out = tmp_path / "run.parquet"
    res = ingest([a, b], out, jobs=2)
    assert res.ranks == [0, 1, 2, 3]
    want = []
    for src in (a, b):
        con = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        want.append(con.execute("select count(*) from CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0])
        con.close()
    got = dict(
        duckdb.sql(
            f"select rank // 2, count(*) from '{out}' where kind = 'kernel' group by 1"
        ).fetchall()
    )
    assert sorted(got.values()) == sorted(want)
    assert sum(got.values()) == sum(want)


def test_truncated_export_fails_cleanly(tmp_path: Path) -> None:
    src = CASES[1]
    if not src.exists():
        pytest.skip("example traces absent")
    plain = tmp_path / "cut.sqlite"
    with gzip.open(src, "rb") as fh, plain.open("wb") as dst:
        shutil.copyfileobj(fh, dst)
    data = plain.read_bytes()
    plain.write_bytes(data[: len(data) // 2])
    out = tmp_path / "run.parquet"
    from tracekit.errors import TracekitError

    with pytest.raises(TracekitError) as err:
        ingest([plain], out, jobs=1)
    assert "cut.sqlite" in str(err.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cut.sqlite"]
