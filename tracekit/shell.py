"""``tracekit shell``: an SQL prompt over runs.

The runs are the view ``events``; every shipped query is a view of the same name
(``SELECT * FROM phase_breakdown``), and a query's parameters are DuckDB variables
(``SET VARIABLE top_n = 5``).  The DuckDB CLI is used when a ``duckdb`` binary is
on PATH; otherwise a small Python prompt over the duckdb module does the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import duckdb

from tracekit.errors import TracekitError
from tracekit.sql import (
    FORMATS,
    Query,
    added_columns_sql,
    check_run,
    connect,
    describe,
    execute,
    format_table,
    list_queries,
    load_query,
    parse_param_args,
)

MAX_ROWS = 50
PROMPT, MORE = "tracekit> ", "      ...> "


def _literal(text: str) -> str:
    """An SQL string literal (for the DuckDB CLI, which has no parameter binding)."""
    return "'" + text.replace("'", "''") + "'"


def banner(queries: Sequence[Query], n_runs: int) -> str:
    names = ", ".join(q.name for q in queries)
    return (
        f"tracekit: {n_runs} run file(s) as the view events; shipped queries as views: {names}. "
        "Try: SELECT * FROM phase_breakdown; parameters: SET VARIABLE top_n = 5;"
    )


def init_sql(
    parquet_paths: Sequence[str | Path],
    queries: Sequence[Query],
    columns: Sequence[str] | None = None,
) -> str:
    """SQL that creates ``events`` over the runs and one view per shipped query;
    ``columns`` (the runs' columns), where given, adds the columns older runs lack.

    >>> "CREATE VIEW events" in init_sql(["run.parquet"], [])
    True
    """
    files = ", ".join(_literal(str(Path(p).resolve())) for p in parquet_paths)
    added = added_columns_sql(columns) if columns is not None else ""
    stmts = [
        f"CREATE VIEW events AS SELECT *{added} FROM read_parquet([{files}], union_by_name = true)"
    ]
    stmts += [f'CREATE VIEW "{q.name}" AS\n{q.sql}' for q in queries]
    return ";\n".join(stmts) + ";\n"


def add_query_views(con: duckdb.DuckDBPyConnection, queries: Sequence[Query]) -> None:
    """Create one view per query on a connection that has ``events``."""
    for q in queries:
        # q.name matched [a-z_][a-z0-9_]* when parsed; q.sql is a shipped file.
        con.execute(f'CREATE VIEW "{q.name}" AS\n{q.sql}')


def duckdb_cli() -> str | None:
    """Path of the ``duckdb`` binary (on PATH, or beside this Python, where
    ``pip install duckdb-cli`` puts it in a virtual environment), or None."""
    found = shutil.which("duckdb")
    if found is None:
        here = Path(sys.executable).parent / "duckdb"
        found = str(here) if here.is_file() and os.access(here, os.X_OK) else None
    return found


def shell(parquet_paths: Sequence[str | Path], *, python: bool = False) -> int:
    """Open an interactive SQL shell over runs; return its exit status.

    >>> shell(["tp2.parquet"])  # doctest: +SKIP
    """
    paths = [Path(p) for p in parquet_paths]
    if not paths:
        raise TracekitError("No run given; pass one or more RUN.parquet files.")
    for p in paths:
        check_run(p)
    queries = list_queries()
    binary = None if python else duckdb_cli()
    if binary is not None:
        with duckdb.connect() as con:
            columns = con.read_parquet(
                [str(p.resolve()) for p in paths], union_by_name=True
            ).columns
        args = [
            binary,
            "-cmd",
            init_sql(paths, queries, columns),
            "-cmd",
            f".print {banner(queries, len(paths))}",
        ]
        return subprocess.call(args)
    con = connect(paths)
    add_query_views(con, queries)
    try:
        repl(con, sys.stdin, sys.stdout, greeting=banner(queries, len(paths)))
    finally:
        con.close()
    return 0


HELP = """\
SQL statements end with ';' and may span lines. The runs are the view events.
  .queries               list the shipped queries (each is also a view of that name)
  .describe NAME         a query's description, parameters and columns
  .run NAME [k=v ...]    run a shipped query with parameters
  .mode FORMAT           output format: table, csv, json, markdown
  .help                  this text
  .quit                  leave (also Ctrl-D)"""


def _show(df_text: str, out: TextIO) -> None:
    out.write(df_text + "\n")


def _run_sql(con: duckdb.DuckDBPyConnection, text: str, mode: str, out: TextIO) -> None:
    try:
        rel = con.sql(text)
        if rel is None:
            return
        df = rel.limit(MAX_ROWS + 1).df()
    except duckdb.Error as exc:
        lines = str(exc).strip().splitlines()
        out.write(f"Error: {lines[0] if lines else type(exc).__name__}\n")
        return
    if list(df.columns) == ["Success"] and df.empty:
        return  # SET, CREATE and the like
    more = len(df) > MAX_ROWS
    _show(format_table(df.head(MAX_ROWS), mode), out)
    if more:
        out.write(f"(first {MAX_ROWS} rows shown; add LIMIT/OFFSET or use .mode csv to see more)\n")


def _dot(con: duckdb.DuckDBPyConnection, line: str, state: dict[str, str], out: TextIO) -> bool:
    """Handle a dot command; return False to leave the prompt."""
    cmd, *args = line.split()
    try:
        if cmd in (".quit", ".exit", ".q"):
            return False
        if cmd == ".help":
            out.write(HELP + "\n")
        elif cmd == ".queries":
            for q in list_queries():
                out.write(f"  {q.name:<20} {q.summary}\n")
        elif cmd == ".describe" and len(args) == 1:
            out.write(describe(load_query(args[0])) + "\n")
        elif cmd == ".run" and args:
            query = load_query(args[0])
            df = execute(con, query, parse_param_args(args[1:]))
            _show(format_table(df, state["mode"]), out)
        elif cmd == ".mode" and len(args) == 1 and args[0] in FORMATS:
            state["mode"] = args[0]
        else:
            out.write(f"Unknown or incomplete command {line!r}; type .help.\n")
    except TracekitError as exc:
        out.write(f"Error: {exc}\n")
    return True


def repl(
    con: duckdb.DuckDBPyConnection,
    stdin: TextIO,
    stdout: TextIO,
    *,
    greeting: str = "",
) -> None:
    """Read SQL and dot commands from ``stdin`` until EOF or ``.quit``."""
    interactive = stdin.isatty() and stdout.isatty()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    if greeting:
        stdout.write(greeting + "\n.help lists the commands.\n")
    state = {"mode": "table"}
    buffer: list[str] = []
    while True:
        prompt = MORE if buffer else PROMPT
        try:
            if interactive:
                line = input(prompt)
            else:
                raw = stdin.readline()
                if raw == "":
                    raise EOFError
                line = raw.rstrip("\n")
        except EOFError:
            break
        except KeyboardInterrupt:
            stdout.write("\n")
            buffer = []
            continue
        if not buffer and line.strip().startswith("."):
            if not _dot(con, line.strip(), state, stdout):
                break
            continue
        if not buffer and not line.strip():
            continue
        buffer.append(line)
        if line.rstrip().endswith(";"):
            _run_sql(con, "\n".join(buffer), state["mode"], stdout)
            buffer = []
    if buffer:
        _run_sql(con, "\n".join(buffer), state["mode"], stdout)
