"""``tracekit comm``: communication share, exposure, transfer vs wait per phase."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def comm(
        runs: Annotated[list[Path], typer.Argument(help="Parquet file(s) written by tracekit ingest.")],
        by: Annotated[str, typer.Option("--by", help="phase, op, rank or collective.")] = "phase",
        fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or markdown.")] = "table",
    ) -> None:
        """Communication per phase: collectives, total, transfer (min over ranks), wait,
        exposed (not overlapped by compute), bandwidth where known, slowest rank.

        Example: tracekit comm tp4.parquet --by op
        """
        from tracekit.comm import comm_table
        from tracekit.sql import check_run, format_table

        for r in runs:
            check_run(r)
        typer.echo(format_table(comm_table(runs, by=by), fmt))
