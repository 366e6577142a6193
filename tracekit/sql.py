"""The SQL library: load, list and run the shipped ``queries/*.sql`` over runs.

Each query file starts with a header of ``--`` comment lines, then one SQL
statement over a view ``events`` (one row per event, see :mod:`tracekit.schema`)::

    -- name: top_kernels
    -- description: The kernels with the most kernel time per run and phase.
    --   Lines indented by two or more spaces continue the item above.
    -- param: top_n INTEGER 10 kernels listed per run and phase
    -- column: kernel_ms  kernel time (ms): sum of dur_ns
    SELECT ... WHERE rank_in_phase <= COALESCE(getvariable('top_n'), 10)

A parameter is read in the SQL as ``getvariable('NAME')`` with the header's default
repeated in a ``COALESCE``, so the file runs unchanged in a plain DuckDB shell;
:func:`run_query` binds each value with ``SET VARIABLE NAME = $value``.  A default
of ``required`` makes the parameter mandatory.  ``column:`` lines document the
result columns (tests check that they match what the query returns).

The files ship in the wheel as the package ``tracekit.queries`` (top-level
``queries/`` in the source tree) and are read through :mod:`importlib.resources`.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from tracekit.errors import TracekitError

if TYPE_CHECKING:  # pandas is imported only where a DataFrame is made (start-up time)
    import pandas as pd

QUERY_PACKAGE = "tracekit.queries"
METADATA_KEY = b"tracekit"
FORMATS = ("table", "csv", "json", "markdown")

#: Parameter types a header may declare, and how a value given as text is read.
PARAM_TYPES = ("INTEGER", "BIGINT", "DOUBLE", "VARCHAR", "BOOLEAN")

#: Columns added to the events table after runs were first written (name, SQL type).
#: A run without one reads it as NULL (the ``events`` view adds it), and the shipped
#: queries then compute what it would hold themselves (the slower way it replaced).
ADDED_COLUMNS = (
    ("busy_ns", "BIGINT"),
    ("step_busy_ns", "BIGINT"),
    ("exposed_ns", "BIGINT"),
    ("launch_first", "BOOLEAN"),
)

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_KEY_LINE = re.compile(r"^-- ([a-z_]+):(.*)$")
_GETVARIABLE = re.compile(r"getvariable\s*\(\s*'([^']*)'\s*\)", re.IGNORECASE)
_TRUE = ("true", "t", "yes", "y", "1", "on")
_FALSE = ("false", "f", "no", "n", "0", "off")


@dataclass(frozen=True)
class Param:
    """A query parameter declared by a ``-- param:`` header line."""

    name: str
    type: str
    default: Any  # None is SQL NULL; see ``required``
    required: bool
    description: str


@dataclass(frozen=True)
class Query:
    """One parsed query file."""

    name: str
    description: str
    sql: str
    source: str
    params: tuple[Param, ...] = ()
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The first sentence of the description (for listings)."""
        return re.split(r"(?<=\.)\s", self.description, maxsplit=1)[0]


# --------------------------------------------------------------------------- parsing


def convert(value: Any, type_: str, what: str) -> Any:
    """Read ``value`` (text from the command line, or a Python value) as ``type_``.

    >>> convert("20", "INTEGER", "parameter top_n")
    20
    """
    if value is None:
        return None
    if isinstance(value, str) and value.strip().upper() == "NULL":
        return None
    try:
        if type_ in ("INTEGER", "BIGINT"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if type_ == "DOUBLE":
            return float(value)
        if type_ == "BOOLEAN":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
    except (TypeError, ValueError):
        raise TracekitError(f"The {what} must be {type_}, not {value!r}.") from None
    return str(value)


@functools.cache
def _reserved_words() -> frozenset[str]:
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'"
        ).fetchall()
    finally:
        con.close()
    return frozenset(r[0].lower() for r in rows)


def _split_param(tail: str, where: str) -> tuple[str, str, str, str]:
    """``NAME TYPE DEFAULT DESCRIPTION`` -> its four parts (DEFAULT may be quoted)."""
    parts = tail.split(None, 2)
    if len(parts) < 3:
        raise TracekitError(
            f"{where}: a param line needs 'NAME TYPE DEFAULT DESCRIPTION', got {tail.strip()!r}."
        )
    name, type_, rest = parts
    if rest.startswith("'"):
        end = rest.find("'", 1)
        if end < 0:
            raise TracekitError(f"{where}: the default of param {name!r} has no closing quote.")
        default, description = rest[: end + 1], rest[end + 1 :]
    else:
        pieces = rest.split(None, 1)
        default, description = pieces[0], (pieces[1] if len(pieces) > 1 else "")
    return name, type_, default, description.strip()


def _make_param(tail: str, where: str) -> Param:
    name, type_, default_text, description = _split_param(tail, where)
    if not _IDENT.match(name):
        raise TracekitError(
            f"{where}: param name {name!r} must be lower-case letters, digits and '_'."
        )
    if name in _reserved_words():
        raise TracekitError(
            f"{where}: param name {name!r} is an SQL reserved word, so "
            f"'SET VARIABLE {name} = ...' fails in a DuckDB shell; choose another name."
        )
    type_ = type_.upper()
    if type_ not in PARAM_TYPES:
        raise TracekitError(
            f"{where}: param {name!r} has type {type_!r}; use one of {', '.join(PARAM_TYPES)}."
        )
    if default_text == "required":
        return Param(name, type_, None, True, description)
    if default_text.startswith("'") and default_text.endswith("'") and len(default_text) >= 2:
        default: Any = default_text[1:-1]
        if type_ != "VARCHAR":
            default = convert(default, type_, f"default of param {name!r} in {where}")
    else:
        default = convert(default_text, type_, f"default of param {name!r} in {where}")
    return Param(name, type_, default, False, description)


def parse_query(text: str, source: str) -> Query:
    """Parse the text of one query file; errors name ``source:line``.

    >>> q = parse_query("-- name: one\\n-- description: One row.\\nSELECT 1 AS x", "one.sql")
    >>> (q.name, q.description, q.sql)
    ('one', 'One row.', 'SELECT 1 AS x')
    """
    lines = text.splitlines()
    name: str | None = None
    description: list[str] = []
    params: list[Param] = []
    param_lines: dict[str, int] = {}
    columns: dict[str, str] = {}
    # Where an indented continuation line goes: ("description"|"param"|"column", key).
    current: tuple[str, str] | None = None
    body_start = len(lines)
    for i, line in enumerate(lines):
        where = f"{source}:{i + 1}"
        stripped = line.rstrip()
        if not stripped.startswith("--"):
            if stripped.strip() == "" and name is None:
                continue
            body_start = i
            break
        if stripped == "--":
            current = None
            continue
        key_match = _KEY_LINE.match(stripped)
        if key_match is None:
            if stripped.startswith("--  ") and current is not None:
                more = stripped[2:].strip()
                kind, key = current
                if kind == "description":
                    description.append(more)
                elif kind == "column":
                    columns[key] = f"{columns[key]} {more}".strip()
                else:
                    idx = next(j for j, p in enumerate(params) if p.name == key)
                    old = params[idx]
                    params[idx] = Param(
                        old.name,
                        old.type,
                        old.default,
                        old.required,
                        f"{old.description} {more}".strip(),
                    )
                continue
            if stripped.startswith("--  "):
                raise TracekitError(
                    f"{where}: an indented header line must follow a description, param or column line."
                )
            # A plain comment ends the header; it belongs to the SQL body.
            body_start = i
            break
        key, value = key_match.group(1), key_match.group(2).strip()
        if key == "name":
            if name is not None:
                raise TracekitError(f"{where}: the header has a second 'name:' line.")
            if not _IDENT.match(value):
                raise TracekitError(
                    f"{where}: query name {value!r} must be lower-case letters, digits and '_'."
                )
            name = value
            current = None
        elif key == "description":
            description.append(value)
            current = ("description", "")
        elif key == "param":
            param = _make_param(value, where)
            if param.name in param_lines:
                raise TracekitError(f"{where}: param {param.name!r} is declared twice.")
            param_lines[param.name] = i + 1
            params.append(param)
            current = ("param", param.name)
        elif key == "column":
            parts = value.split(None, 1)
            if not parts:
                raise TracekitError(f"{where}: a column line needs 'NAME DESCRIPTION'.")
            columns[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
            current = ("column", parts[0])
        else:
            raise TracekitError(
                f"{where}: unknown header key {key!r} (expected name, description, param or column)."
            )
    if name is None:
        raise TracekitError(f"{source}:1: the header has no '-- name:' line.")
    if not description:
        raise TracekitError(f"{source}:1: the header has no '-- description:' line.")
    sql = "\n".join(lines[body_start:]).strip()
    while sql.endswith(";"):
        sql = sql[:-1].rstrip()
    if not sql:
        raise TracekitError(f"{source}:{len(lines)}: the query file has no SQL after its header.")
    declared = {p.name for p in params}
    for j, line in enumerate(lines[body_start:], start=body_start + 1):
        for used in _GETVARIABLE.findall(line):
            if used not in declared:
                raise TracekitError(
                    f"{source}:{j}: getvariable('{used}') is not declared by a '-- param:' line."
                )
    used_all = set(_GETVARIABLE.findall(sql))
    for p in params:
        if p.name not in used_all:
            raise TracekitError(
                f"{source}:{param_lines[p.name]}: param {p.name!r} is never read "
                f"with getvariable('{p.name}') in the SQL."
            )
    return Query(
        name=name,
        description=" ".join(description).strip(),
        sql=sql,
        source=source,
        params=tuple(params),
        columns=columns,
    )


# --------------------------------------------------------------------------- loading


def _shipped_files() -> dict[str, Any]:
    files = resources.files(QUERY_PACKAGE)
    return {f.name.removesuffix(".sql"): f for f in files.iterdir() if f.name.endswith(".sql")}


def list_queries() -> list[Query]:
    """All shipped queries, sorted by name.

    >>> "phase_breakdown" in [q.name for q in list_queries()]
    True
    """
    out = []
    for stem, res in sorted(_shipped_files().items()):
        query = parse_query(res.read_text(encoding="utf-8"), f"queries/{stem}.sql")
        if query.name != stem:
            raise TracekitError(
                f"queries/{stem}.sql:1: the header names the query {query.name!r}, "
                f"but the file is {stem}.sql; make them equal."
            )
        out.append(query)
    return out


def load_query(name_or_file: str | Path) -> Query:
    """A shipped query by name, or a query file by path.

    >>> load_query("coverage").name
    'coverage'
    """
    text = str(name_or_file)
    path = Path(text)
    if text.endswith(".sql") or path.is_file():
        if not path.is_file():
            raise TracekitError(f"Query file {path} does not exist.")
        return parse_query(path.read_text(encoding="utf-8"), str(path))
    shipped = _shipped_files()
    if text not in shipped:
        near = difflib.get_close_matches(text, list(shipped), n=3, cutoff=0.6)
        hint = (
            f"did you mean {', '.join(near)}?"
            if near
            else "run 'tracekit query --list' to see them."
        )
        raise TracekitError(f"There is no query named {text!r}; {hint}")
    return next(q for q in list_queries() if q.name == text)


# --------------------------------------------------------------------------- running


def check_run(path: str | Path, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, Any]:
    """Check that ``path`` is a tracekit run and return its run metadata.

    A run is a Parquet file written by ``tracekit ingest``: its key-value metadata
    holds the key ``tracekit`` (JSON).  The footer is read with DuckDB (``con`` if
    given), so checking a run costs no pyarrow import.
    """
    p = Path(path)
    if not p.is_file():
        raise TracekitError(f"Run file {p} does not exist.")
    own = con is None
    db = duckdb.connect() if con is None else con
    try:
        # The path is a bound value, never SQL text.
        rows = db.execute(
            "SELECT key, value FROM parquet_kv_metadata($path)", {"path": str(p)}
        ).fetchall()
    except duckdb.Error:
        raise TracekitError(
            f"{p} is not a Parquet file; make a run with 'tracekit ingest TRACE -o RUN.parquet'."
        ) from None
    finally:
        if own:
            db.close()
    raw = next((bytes(v) for k, v in rows if bytes(k) == METADATA_KEY), None)
    if raw is None:
        raise TracekitError(
            f"{p} is a Parquet file but not a tracekit run (no 'tracekit' metadata); "
            "make one with 'tracekit ingest'."
        )
    try:
        meta = json.loads(raw)
    except ValueError:
        raise TracekitError(f"{p} has unreadable 'tracekit' metadata (not JSON).") from None
    return meta if isinstance(meta, dict) else {"tracekit": meta}


def connect(parquet_paths: Sequence[str | Path]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the runs as the view ``events``.

    Every path is checked with :func:`check_run`; several runs (or ranks written to
    several files) are concatenated by column name.
    """
    paths = [Path(p) for p in parquet_paths]
    if not paths:
        raise TracekitError("No run given; pass one or more RUN.parquet files.")
    con = duckdb.connect()
    try:
        for p in paths:
            check_run(p, con)
    except TracekitError:
        con.close()
        raise
    # The relation API takes the file list as a value, so no path is put into SQL text.
    rel = con.read_parquet([str(p.resolve()) for p in paths], union_by_name=True)
    added = added_columns_sql(rel.columns)
    if added:
        rel = rel.project("*" + added)
    rel.create_view("events")
    return con


def added_columns_sql(columns: Sequence[str]) -> str:
    """Select-list items that add the :data:`ADDED_COLUMNS` missing from ``columns``
    (runs ingested before they existed) as typed NULLs.

    >>> added_columns_sql(["run", "busy_ns", "step_busy_ns", "exposed_ns"])
    ', NULL::BOOLEAN AS launch_first'
    """
    have = set(columns)
    return "".join(f", NULL::{t} AS {n}" for n, t in ADDED_COLUMNS if n not in have)


def bind_params(query: Query, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The value of every declared parameter: given, else its default.

    >>> bind_params(load_query("top_kernels"), {"top_n": "3"})
    {'top_n': 3}
    """
    given = dict(params or {})
    declared = {p.name: p for p in query.params}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        names = ", ".join(declared) if declared else "none"
        raise TracekitError(
            f"Query {query.name!r} has no parameter {unknown[0]!r} (its parameters: {names})."
        )
    values: dict[str, Any] = {}
    for p in query.params:
        if p.name in given:
            values[p.name] = convert(
                given[p.name], p.type, f"parameter {p.name!r} of query {query.name!r}"
            )
        elif p.required:
            raise TracekitError(
                f"Query {query.name!r} needs the parameter {p.name!r} ({p.description}); "
                f"pass it as --param {p.name}=VALUE."
            )
        else:
            values[p.name] = p.default
    return values


def set_params(con: duckdb.DuckDBPyConnection, query: Query, values: Mapping[str, Any]) -> None:
    """Bind parameter values as DuckDB variables (the value is a prepared parameter)."""
    types = {p.name: p.type for p in query.params}
    for name, value in values.items():
        # The name was checked against _IDENT when the header was parsed; the value
        # is bound by the database, cast to the declared type there.
        con.execute(f'SET VARIABLE "{name}" = CAST($value AS {types[name]})', {"value": value})


def _failed(query: Query, exc: duckdb.Error) -> TracekitError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TracekitError(f"Query {query.name!r} ({query.source}) failed: {first}")


def execute(
    con: duckdb.DuckDBPyConnection, query: Query, params: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Run a parsed query on a connection that has the view ``events``."""
    set_params(con, query, bind_params(query, params))
    try:
        return con.sql(query.sql).df()
    except duckdb.Error as exc:
        raise _failed(query, exc) from None


def run_query(
    name_or_file: str | Path,
    parquet_paths: Sequence[str | Path],
    params: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Run a shipped query (by name) or a query file over one or more runs.

    >>> run_query("coverage", ["run.parquet"])  # doctest: +SKIP
       run  rank  activities  gpu_ms  with_phase_pct ...
    """
    query = load_query(name_or_file)
    values = bind_params(query, params)
    con = connect(parquet_paths)
    try:
        return execute(con, query, values)
    finally:
        con.close()


def query_text(
    name_or_file: str | Path,
    parquet_paths: Sequence[str | Path],
    params: Mapping[str, Any] | None = None,
    fmt: str = "table",
    limit: int | None = None,
) -> str:
    """Run a query like :func:`run_query` and return it formatted as :func:`format_table`
    formats the DataFrame (``tracekit query`` prints this).

    ``limit`` caps the rows of ``table`` and ``markdown`` text (a line after them
    says how many there are); ``csv`` and ``json`` always hold every row.

    A result of plain column types (integers, DOUBLE, BOOLEAN, VARCHAR) printed as
    ``table`` or ``markdown`` is formatted from the fetched rows, with the cells the
    DataFrame would give, so the command does not import pandas (about a second of
    start-up); other types and formats go through the DataFrame.
    """
    if fmt not in FORMATS:
        raise TracekitError(f"Unknown output format {fmt!r}; use one of {', '.join(FORMATS)}.")
    query = load_query(name_or_file)
    values = bind_params(query, params)
    con = connect(parquet_paths)
    try:
        set_params(con, query, values)
        try:
            if fmt in ("table", "markdown"):
                cur = con.execute(query.sql)
                types = [str(d[1]) for d in cur.description or []]
                if all(t in _ROW_TYPES for t in types):
                    headers = [str(d[0]) for d in cur.description or []]
                    rows = cur.fetchall()
                    cut = _cut(len(rows), limit)
                    return format_rows(headers, types, rows[: limit if cut else None], fmt) + cut
                df = cur.df()
            else:
                df = con.sql(query.sql).df()
        except duckdb.Error as exc:
            raise _failed(query, exc) from None
        cut = _cut(len(df), limit) if fmt in ("table", "markdown") else ""
        return format_table(df.head(limit) if cut else df, fmt) + cut
    finally:
        con.close()


def _cut(rows: int, limit: int | None) -> str:
    """The line after a text result cut to ``limit`` rows ("" when nothing was cut)."""
    if not limit or rows <= limit:
        return ""
    return (
        f"\n({rows:,} rows; the first {limit:,} are shown: "
        "--limit 0 prints all, --format csv or json writes all)"
    )


def parse_param_args(items: Iterable[str]) -> dict[str, str]:
    """``["top_n=5", "phase=decode"]`` (``--param`` values) -> a dict.

    >>> parse_param_args(["top_n=5"])
    {'top_n': '5'}
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TracekitError(f"A parameter must be NAME=VALUE, not {item!r}.")
        out[key.strip()] = value
    return out


# --------------------------------------------------------------------------- output


#: Result column types whose fetched Python values print exactly as the DataFrame's
#: (integers stay integers, nullable; DOUBLE is float64; BOOLEAN is not numeric).
_INT_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)
_ROW_TYPES = _INT_TYPES | {"DOUBLE", "BOOLEAN", "VARCHAR"}


def _cell(value: Any, max_width: int) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        if math.isnan(value):
            return "NULL"
        if value == 0 or 1e-3 <= abs(value) < 1e15:
            return f"{round(value, 3):.15g}"
        return f"{value:.3g}"
    text = str(value).replace("\n", " ")
    if len(text) > max_width:
        text = text[: max_width - 1] + "…"
    return text


def _cells(df: pd.DataFrame, max_width: int) -> tuple[list[str], list[list[str]], list[bool]]:
    import pandas as pd

    headers = [str(c) for c in df.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        for c in df.columns
    ]
    cols = [
        [None if v is pd.NA or v is pd.NaT else v for v in df[c].astype(object).tolist()]
        for c in df.columns
    ]
    rows = [[_cell(col[i], max_width) for col in cols] for i in range(len(df))]
    return headers, rows, numeric


def _render(headers: list[str], rows: list[list[str]], numeric: list[bool], fmt: str) -> str:
    """Aligned text (``table``) or ``markdown`` from formatted cells (column by column:
    a result of tens of thousands of rows prints in a fraction of a second)."""
    if fmt == "markdown":

        def md(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rule = ["---:" if n else "---" for n in numeric]
        return "\n".join([md(headers), "| " + " | ".join(rule) + " |", *(md(r) for r in rows)])
    cols: list[Sequence[str]] = list(zip(*rows, strict=True)) if rows else [() for _ in headers]
    widths = [
        max(len(h), max(map(len, col), default=0)) for h, col in zip(headers, cols, strict=True)
    ]
    just = [
        [c.rjust(w) for c in col] if n else [c.ljust(w) for c in col]
        for col, w, n in zip(cols, widths, numeric, strict=True)
    ]
    head = [
        h.rjust(w) if n else h.ljust(w) for h, w, n in zip(headers, widths, numeric, strict=True)
    ]
    body = ["  ".join(head).rstrip(), "  ".join("-" * w for w in widths)]
    body.extend("  ".join(r).rstrip() for r in zip(*just, strict=True))
    if not rows:
        body.append("(no rows)")
    return "\n".join(body)


def _column_cells(values: Sequence[Any], type_: str, max_width: int) -> list[str]:
    """The cells of one fetched column of a plain type (as :func:`_cell` makes them)."""
    if type_ in _INT_TYPES or type_ == "BOOLEAN":
        return ["NULL" if v is None else str(v) for v in values]
    if type_ == "DOUBLE":
        return [_cell(v, max_width) for v in values]
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
            continue
        text = str(v).replace("\n", " ")
        out.append(text if len(text) <= max_width else text[: max_width - 1] + "…")
    return out


def format_rows(
    headers: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str = "table",
    *,
    max_width: int = 60,
) -> str:
    """``table`` or ``markdown`` from fetched rows whose DuckDB column ``types`` are
    all plain (integers, DOUBLE, BOOLEAN, VARCHAR): the same text :func:`format_table`
    gives for the DataFrame of that result.

    >>> print(format_rows(["op", "share_pct"], ["VARCHAR", "DOUBLE"], [("ffn", 61.5)]))
    op   share_pct
    ---  ---------
    ffn       61.5
    """
    if fmt not in ("table", "markdown"):
        raise TracekitError(f"format_rows makes table or markdown, not {fmt!r}.")
    odd = [t for t in types if t not in _ROW_TYPES]
    if odd:
        raise TracekitError(f"format_rows takes plain column types, not {odd[0]}.")
    numeric = [t in _INT_TYPES or t == "DOUBLE" for t in types]
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in types]
    cells = [_column_cells(col, t, max_width) for col, t in zip(cols, types, strict=True)]
    return _render(list(headers), [list(r) for r in zip(*cells, strict=True)], numeric, fmt)


def format_table(df: pd.DataFrame, fmt: str = "table", *, max_width: int = 60) -> str:
    """Render a query result as ``table`` (aligned text), ``csv``, ``json`` or ``markdown``.

    Text cells longer than ``max_width`` are cut with '…' in table and markdown
    output; csv and json keep every value whole.

    >>> import pandas as pd
    >>> print(format_table(pd.DataFrame({"op": ["ffn"], "share_pct": [61.5]})))
    op   share_pct
    ---  ---------
    ffn       61.5
    """
    if fmt == "csv":
        return str(df.to_csv(index=False)).rstrip("\n")
    if fmt == "json":
        return str(df.to_json(orient="records", indent=1, force_ascii=False, double_precision=15))
    if fmt not in FORMATS:
        raise TracekitError(f"Unknown output format {fmt!r}; use one of {', '.join(FORMATS)}.")
    headers, rows, numeric = _cells(df, max_width)
    return _render(headers, rows, numeric, fmt)


def describe(query: Query) -> str:
    """Help text of a query: description, parameters and columns.

    >>> describe(load_query("top_kernels")).splitlines()[0]
    'top_kernels: The kernels with the most kernel time per run and phase, over all ranks, grouped by base kernel name (short_name).'
    """
    out = [f"{query.name}: {query.description}"]
    if query.params:
        out.append("parameters:")
        for p in query.params:
            default = (
                "required" if p.required else ("NULL" if p.default is None else repr(p.default))
            )
            out.append(f"  {p.name} {p.type} (default {default}): {p.description}")
    if query.columns:
        out.append("columns:")
        width = max(len(c) for c in query.columns)
        out.extend(f"  {c.ljust(width)}  {doc}" for c, doc in query.columns.items())
    return "\n".join(out)
