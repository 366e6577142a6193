"""The CLI as a user meets it: real subprocesses, exit codes, one-line errors,
nothing half-written left behind."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
SMALL_SQLITE = SHARED / "nsys" / "fuser-2024.6" / "report1.sqlite"


def tk(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracekit", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def assert_one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0]


def test_missing_file(tmp_path: Path) -> None:
    res = tk("ingest", str(tmp_path / "nope.sqlite"), "-o", str(tmp_path / "x.parquet"))
    assert_one_line_error(res, "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_unknown_extension(tmp_path: Path) -> None:
    f = tmp_path / "trace.txt"
    f.write_text("hello\n")
    res = tk("ingest", str(f), "-o", str(tmp_path / "x.parquet"))
    assert_one_line_error(res, "not a format tracekit reads")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.txt"]


def test_folder_without_traces(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    res = tk("ingest", str(tmp_path / "empty"), "-o", str(tmp_path / "x.parquet"))
    assert_one_line_error(res, "holds no trace files")


def test_truncated_sqlite_leaves_nothing(tmp_path: Path) -> None:
    if not SMALL_SQLITE.exists():
        pytest.skip("shared traces absent")
    bad = tmp_path / "cut.sqlite"
    bad.write_bytes(SMALL_SQLITE.read_bytes()[:8192])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = tk("ingest", str(bad), "-o", str(out_dir / "run.parquet"))
    assert_one_line_error(res)
    assert list(out_dir.iterdir()) == [], "no partial output or temp folder left behind"


def test_truncated_gzip_json(tmp_path: Path) -> None:
    src = SHARED / "kineto" / "hta" / "nccl_data.json.gz"
    if not src.exists():
        pytest.skip("shared traces absent")
    data = gzip.decompress(src.read_bytes())
    bad = tmp_path / "cut.json.gz"
    bad.write_bytes(gzip.compress(data[: len(data) // 2]))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = tk("ingest", str(bad), "-o", str(out_dir / "run.parquet"))
    assert_one_line_error(res)
    assert list(out_dir.iterdir()) == []


def test_info_on_non_run(tmp_path: Path) -> None:
    f = tmp_path / "x.parquet"
    f.write_bytes(b"PAR1 not really")
    assert_one_line_error(tk("info", str(f)))


def test_unknown_phase_map(tmp_path: Path) -> None:
    if not SMALL_SQLITE.exists():
        pytest.skip("shared traces absent")
    res = tk("ingest", str(SMALL_SQLITE), "--phase-map", "nosuch", "-o", str(tmp_path / "x.parquet"))
    assert_one_line_error(res, "Unknown phase map")
    assert not (tmp_path / "x.parquet").exists()


def test_ingest_then_info(tmp_path: Path) -> None:
    if not SMALL_SQLITE.exists():
        pytest.skip("shared traces absent")
    src = tmp_path / "report1.sqlite"
    shutil.copy(SMALL_SQLITE, src)
    res = tk("ingest", str(src), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "report1.parquet").exists(), "default output is RUN.parquet in the working folder"
    assert "coverage" in res.stdout
    info = tk("info", str(tmp_path / "report1.parquet"))
    assert info.returncode == 0, info.stderr
    assert "report1" in info.stdout and "kernel" in info.stdout


def test_every_command_has_an_example_in_help() -> None:
    from typer.main import get_command

    from tracekit.cli import app

    group = get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        assert "Example" in (cmd.help or ""), f"tracekit {name} --help has no example"


def test_mixed_profilers_refused(tmp_path: Path) -> None:
    folder = Path(__file__).resolve().parents[1] / "examples" / "traces" / "h200_tp2"
    res = tk("ingest", str(folder), "-o", str(tmp_path / "x.parquet"))
    assert_one_line_error(res, "mix Nsight Systems and torch.profiler")
    assert list(tmp_path.iterdir()) == []


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "traces"


@pytest.mark.parametrize("trace", ["h100_tp1_graph/nsys", "h200_tp2_graph/torch"])
def test_ingest_of_cuda_graph_traces(trace: str, tmp_path: Path) -> None:
    """The console script keeps pandas out of an ingest; the CUDA-graph paths (capture
    operators) must not need it.  Kernel counts from the raw trace files."""
    import json
    import sqlite3

    import duckdb

    src = EXAMPLES / trace
    if trace.endswith("nsys"):
        db = tmp_path / "t.sqlite"
        db.write_bytes(gzip.decompress(next(src.glob("*.sqlite.gz")).read_bytes()))
        with sqlite3.connect(db) as con:
            want = con.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
        db.unlink()
    else:
        want = 0
        for f in src.glob("*.json.gz"):
            doc = json.loads(gzip.decompress(f.read_bytes()))
            want += sum(1 for e in doc["traceEvents"] if e.get("ph") == "X" and e.get("cat") == "kernel")
    out = tmp_path / "g.parquet"
    res = tk("ingest", str(src), "-o", str(out))
    assert res.returncode == 0, res.stderr
    con = duckdb.connect()
    got, replayed, with_op = con.execute(
        "SELECT count(*), count(graph_node_id), count(*) FILTER (graph_node_id IS NOT NULL AND op IS NOT NULL) "
        "FROM read_parquet($p) WHERE kind = 'kernel'",
        {"p": str(out)},
    ).fetchone()
    assert got == want
    if trace.endswith("nsys"):
        assert replayed > 0 and with_op > 0  # replayed kernels got their capture-time operator


# --- Kineto files parsed early by the console script ---------------------------------

TP4_TORCH = EXAMPLES / "h200_tp4" / "torch"


def tk_env(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tk`` with TMPDIR pointed at ``tmp``, where the Kineto reader's part files go."""
    import os

    return subprocess.run(
        [sys.executable, "-m", "tracekit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp)},
    )


def test_early_parse_of_a_truncated_rank_leaves_nothing(tmp_path: Path) -> None:
    """The console script starts parsing the first Kineto files before ingest runs;
    a truncated one still gives one sentence, and no part file stays behind."""
    good = sorted(TP4_TORCH.glob("trace_rank*.json.gz"))
    if len(good) < 2:
        pytest.skip("examples/traces/h200_tp4/torch absent")
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    shutil.copy(good[0], ranks / good[0].name)
    data = gzip.decompress(good[1].read_bytes())
    (ranks / good[1].name).write_bytes(gzip.compress(data[: len(data) // 2]))
    tmp, out_dir = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out_dir.mkdir()
    res = tk_env(tmp, "ingest", str(ranks), "-o", str(out_dir / "run.parquet"))
    assert_one_line_error(res, good[1].name)
    assert list(out_dir.iterdir()) == [] and list(tmp.iterdir()) == []


def test_early_parse_ended_when_ingest_refuses_its_output(tmp_path: Path) -> None:
    """Ingest refuses a missing output folder before reading any file; the parses
    started early are ended, and their part files removed, before the process ends."""
    files = sorted(TP4_TORCH.glob("trace_rank*.json.gz"))
    if not files:
        pytest.skip("examples/traces/h200_tp4/torch absent")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    res = tk_env(tmp, "ingest", *map(str, files), "-o", str(tmp_path / "nope" / "run.parquet"))
    assert_one_line_error(res, "does not exist")
    assert list(tmp.iterdir()) == []


def test_console_script_ingest_equals_library_ingest(tmp_path: Path) -> None:
    """The run the console script writes (files parsed early, parts parsed while
    the file is still being copied) holds the same rows as a library ingest, which
    parses each file when it reads it."""
    import duckdb

    from tracekit.ingest import ingest

    files = sorted(TP4_TORCH.glob("trace_rank*.json.gz"))
    if not files:
        pytest.skip("examples/traces/h200_tp4/torch absent")
    res = tk("ingest", *map(str, files), "-o", str(tmp_path / "cli.parquet"))
    assert res.returncode == 0, res.stderr
    ingest(files, tmp_path / "lib.parquet")
    con = duckdb.connect()
    cols = "* EXCLUDE (run)"
    for a, b in (("cli", "lib"), ("lib", "cli")):
        diff = con.execute(
            f"SELECT count(*) FROM (SELECT {cols} FROM '{tmp_path}/{a}.parquet' "
            f"EXCEPT ALL SELECT {cols} FROM '{tmp_path}/{b}.parquet')"
        ).fetchone()
        assert diff == (0,)
    n = con.execute(f"SELECT count(*) FROM '{tmp_path}/cli.parquet'").fetchone()
    assert n is not None and n[0] > 0
