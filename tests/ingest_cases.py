"""Ingest set-ups several test files share: a named case's inputs at a given Nsight
batch size, and one export ingested in one batch per table and in 777-row batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tracekit.ingest import ingest
from tracekit.readers import nsys


def ingest_case(
    make: Callable[[Path], list[Path]],
    batch_rows: int | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """Ingest the inputs ``make`` builds (skip the test where they are absent), with
    Nsight batches of ``batch_rows`` rows where given; return the run file."""
    try:
        inputs = make(tmp_path)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    for p in inputs:
        if not p.exists():
            pytest.skip(f"{p} not present")
    if batch_rows is not None:
        monkeypatch.setattr(nsys, "BATCH_ROWS", batch_rows)
    run = tmp_path / "run.parquet"
    ingest(inputs, run, jobs=2)
    return run


def ingest_in_batches(src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """``src`` ingested in one batch per table, then in 777-row batches."""
    out = []
    for rows in (1 << 30, 777):
        monkeypatch.setattr(nsys, "BATCH_ROWS", rows)
        out.append(tmp_path / f"b{rows}.parquet")
        ingest([src], out[-1], jobs=1)
    return out[0], out[1]
