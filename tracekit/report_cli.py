"""``tracekit report``: a thin typer command over :mod:`tracekit.report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run files written by tracekit ingest (several: drawn side by side)."),
    ],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="HTML file to write (self-contained, works offline)."),
    ] = Path("report.html"),
    png: Annotated[
        Path | None, typer.Option("--png", help="Also write every chart as PNG into this folder.")
    ] = None,
    svg: Annotated[
        Path | None, typer.Option("--svg", help="Also write every chart as SVG into this folder.")
    ] = None,
) -> None:
    """Write an HTML report of a run: run facts and coverage, phase split, operator and
    category shares per phase, bottleneck donuts, step latency with batch size, and
    communication transfer vs wait, each chart beside its table.

    Example: tracekit report tp2.parquet -o tp2.html --png charts/
    """
    from tracekit.report import write_run_report

    written = write_run_report(runs, output, png_dir=png, svg_dir=svg)
    extra = "".join(f"; charts in {d}" for d in (png, svg) if d is not None)
    from rich.console import Console

    Console(stderr=True).print(f"wrote {written}{extra}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``tracekit report`` to the CLI."""
    app.command("report")(report)
