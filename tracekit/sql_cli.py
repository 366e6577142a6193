"""``tracekit query`` and ``tracekit shell``: thin typer commands over
:mod:`tracekit.sql` and :mod:`tracekit.shell`.  ``tracekit.cli`` calls
:func:`register`; TracekitError is caught there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracekit.errors import TracekitError


def register(app: typer.Typer) -> None:
    """Add the ``query`` and ``shell`` commands to ``app``."""

    @app.command("query")
    def query(
        name: Annotated[
            str | None, typer.Argument(help="A shipped query (see --list) or a .sql file.")
        ] = None,
        runs: Annotated[
            list[Path] | None, typer.Argument(help="Run files written by tracekit ingest.")
        ] = None,
        param: Annotated[
            list[str] | None,
            typer.Option("--param", "-p", help="Query parameter NAME=VALUE (repeatable)."),
        ] = None,
        fmt: Annotated[
            str, typer.Option("--format", "-f", help="table, csv, json or markdown.")
        ] = "table",
        list_: Annotated[
            bool, typer.Option("--list", "-l", help="List the shipped queries.")
        ] = False,
        describe_: Annotated[
            bool, typer.Option("--describe", help="Show the query's parameters and columns.")
        ] = False,
        limit: Annotated[
            int,
            typer.Option(
                "--limit", "-n",
                help="Rows printed as table or markdown (0 = all); csv and json hold every row.",
            ),
        ] = 1000,
    ) -> None:
        """Run a shipped SQL query (or a .sql file) over one or more runs.

        Example: tracekit query top_kernels tp2.parquet -p top_n=5 --format markdown
        """
        from tracekit.sql import (
            describe,
            format_rows,
            format_table,
            list_queries,
            load_query,
            parse_param_args,
            query_text,
        )

        if list_:
            rows = [(q.name, " ".join(p.name for p in q.params), q.summary) for q in list_queries()]
            headers = ["query", "params", "description"]
            if fmt in ("table", "markdown"):  # no pandas import for the common case
                typer.echo(format_rows(headers, ["VARCHAR"] * 3, rows, fmt, max_width=100))
                return
            import pandas as pd  # imported here: every tracekit call would pay for it

            df = pd.DataFrame(rows, columns=headers)
            typer.echo(format_table(df, fmt, max_width=100))
            return
        if name is None:
            raise TracekitError("Name a query (tracekit query --list shows them) and a run file.")
        if describe_:
            typer.echo(describe(load_query(name)))
            return
        if not runs:
            raise TracekitError(
                f"Give the run file(s) to query: tracekit query {name} RUN.parquet."
            )
        if limit < 0:
            raise TracekitError(f"--limit must be 0 (all rows) or more, not {limit}.")
        typer.echo(query_text(name, runs, parse_param_args(param or []), fmt, limit or None))

    @app.command("shell")
    def shell(
        runs: Annotated[list[Path], typer.Argument(help="Run files written by tracekit ingest.")],
        python: Annotated[
            bool,
            typer.Option("--python", help="Use the built-in prompt even if duckdb is on PATH."),
        ] = False,
    ) -> None:
        """Open an SQL shell over runs: the view events, and every shipped query as a view.

        Example: tracekit shell tp2.parquet   (then: SELECT * FROM phase_breakdown;)
        """
        from tracekit.shell import shell as open_shell

        code = open_shell(runs, python=python)
        if code:
            raise typer.Exit(code)
