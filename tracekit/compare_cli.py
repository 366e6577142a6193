"""``tracekit compare`` and ``tracekit gpus``: thin typer commands over
:mod:`tracekit.compare` and :mod:`tracekit.gpus`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tracekit.errors import TracekitError

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod

    from tracekit.compare import CompareResult

FORMATS = ("table", "csv", "json", "markdown")
_SUFFIX_FORMAT = {".csv": "csv", ".json": "json", ".md": "markdown", ".markdown": "markdown"}


def split_sides(runs: list[str]) -> tuple[list[str], list[str]]:
    """Split ``A... --vs B...`` (or exactly two runs ``A B``) into the two sides.

    >>> split_sides(["a1.parquet", "a2.parquet", "--vs", "b1.parquet"])
    (['a1.parquet', 'a2.parquet'], ['b1.parquet'])
    >>> split_sides(["a.parquet", "b.parquet"])
    (['a.parquet'], ['b.parquet'])
    """
    stray = [r for r in runs if r.startswith("-") and r != "--vs"]
    if stray:
        raise TracekitError(f"Unknown option {stray[0]}; see tracekit compare --help.")
    if "--vs" in runs:
        i = runs.index("--vs")
        a, b = runs[:i], runs[i + 1 :]
        if "--vs" in b:
            raise TracekitError("Give --vs once: runs before it are side A, runs after it side B.")
    elif len(runs) == 2:
        a, b = runs[:1], runs[1:]
    else:
        raise TracekitError(
            "Name two runs (tracekit compare A.parquet B.parquet), or the repeats of each side "
            "separated by --vs (tracekit compare a_*.parquet --vs b_*.parquet)."
        )
    if not a or not b:
        raise TracekitError(f"Side {'A' if not a else 'B'} names no run file.")
    return a, b


def _num(x: Any, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return format(x, fmt)


def _time(ns: Any, unit: str) -> str:
    if ns is None or (isinstance(ns, float) and not math.isfinite(ns)):
        return ""
    return f"{ns / 1e3:,.2f}" if unit == "token" else f"{ns / 1e6:,.3f}"


def render(result: Any, console: Console, top: int) -> None:
    """Print a comparison as rich tables: one per phase, then the verdicts."""
    from rich.table import Table

    a, b = result.a, result.b
    gpu = lambda s: s.gpu.name if s.gpu else (", ".join(s.gpu_models) or "GPU not recorded")  # noqa: E731
    console.print(
        f"A = {a.label}: {len(a.files)} run(s), {gpu(a)}, TP {a.tp}\n"
        f"B = {b.label}: {len(b.files)} run(s), {gpu(b)}, TP {b.tp}\n"
        f"ratio = B/A (above 1: B takes longer); kernel = sum of durations, busy = union per device; "
        f"ranks: {'per rank (mean)' if result.ranks == 'mean' else 'summed over ranks'}; "
        f"compute predictions at {result.dtype}",
        highlight=False,
    )
    rows = result.rows
    for phase, grp in rows.groupby("phase", sort=False):
        unit = str(grp["unit"].iloc[0])
        tu = "us/token" if unit == "token" else f"ms/{unit}"
        steps = grp[grp["level"] == "phase"]
        title = (
            f"{phase}  ({_num(steps['steps_a'].iloc[0], '.4g')} vs {_num(steps['steps_b'].iloc[0], '.4g')} {unit}s per rank)"
            if unit != "run" and len(steps)
            else str(phase)
        )
        t = Table(title=title, title_justify="left", show_lines=False)
        columns: list[tuple[str, JustifyMethod]] = [
            ("level", "left"),
            ("key", "left"),
            (f"A {tu}", "right"),
            (f"B {tu}", "right"),
            ("B/A", "right"),
            ("busy B/A", "right"),
            ("share A", "right"),
            ("share B", "right"),
            ("spread A/B", "right"),
            ("noise", "left"),
            ("bound", "left"),
            ("pred", "right"),
            ("meas/pred", "right"),
        ]
        for col, just in columns:
            t.add_column(
                col,
                justify=just,
                no_wrap=True,
                overflow="ellipsis",
                max_width=40 if col == "key" else None,
            )
        shown = grp.groupby("level", sort=False).head(top)
        for r in shown.itertuples(index=False):
            noise = "" if r.noise is None else ("inside" if r.noise else "outside")
            spread = (
                "/".join(_num(x, ".0%") or "-" for x in (r.spread_a, r.spread_b))
                if (r.n_a or 0) > 1 or (r.n_b or 0) > 1
                else ""
            )
            t.add_row(
                str(r.level),
                str(r.key),
                _time(r.kernel_a, unit),
                _time(r.kernel_b, unit),
                _num(r.ratio, ".2f"),
                _num(r.busy_ratio, ".2f"),
                _num(r.share_a, ".1%"),
                _num(r.share_b, ".1%"),
                spread,
                noise,
                r.bound if isinstance(r.bound, str) else "",
                _num(r.predicted, ".2f"),
                _num(r.deviation, ".2f"),
            )
        console.print(t)
        hidden = len(grp) - len(shown)
        if hidden > 0:
            console.print(
                f"  ({hidden} smaller rows not shown; --top or --format csv for all)",
                highlight=False,
            )
    for v in result.verdicts["verdict"]:
        console.print(f"verdict: {v}", highlight=False, markup=False)
    for n in result.notes:
        console.print(f"note: {n}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``compare`` and ``gpus`` to the ``tracekit`` app."""

    @app.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def compare(
        runs: Annotated[
            list[str],
            typer.Argument(
                help="Run files of side A, then --vs and the run files of side B (globs allowed); or just two runs A B.",
                metavar="A... [--vs] B...",
            ),
        ],
        label_a: Annotated[
            str | None, typer.Option("--label-a", help="Name of side A (default: its run label).")
        ] = None,
        label_b: Annotated[str | None, typer.Option("--label-b", help="Name of side B.")] = None,
        gpu_a: Annotated[
            str | None,
            typer.Option(
                "--gpu-a",
                help="GPU of side A, overriding the trace (e.g. 'H100 SXM'; see tracekit gpus).",
            ),
        ] = None,
        gpu_b: Annotated[str | None, typer.Option("--gpu-b", help="GPU of side B.")] = None,
        tp_a: Annotated[
            int | None,
            typer.Option(
                "--tp-a",
                help="TP degree of side A (default: the run's world size; set 1 for data-parallel runs).",
            ),
        ] = None,
        tp_b: Annotated[int | None, typer.Option("--tp-b", help="TP degree of side B.")] = None,
        by: Annotated[
            str,
            typer.Option(
                "--by",
                help="Levels, comma-separated: category, op, kernel (short name), name (full kernel name).",
            ),
        ] = "category,op",
        per: Annotated[
            str,
            typer.Option("--per", help="Unit: step, or token (where steps carry token counts)."),
        ] = "step",
        ranks: Annotated[
            str, typer.Option("--ranks", help="mean: one rank's time; sum: summed over ranks.")
        ] = "mean",
        no_phases: Annotated[
            bool,
            typer.Option(
                "--no-phases",
                help="Compare whole runs (per run and rank), ignoring phases and steps.",
            ),
        ] = False,
        no_predict: Annotated[
            bool,
            typer.Option(
                "--no-predict", help="Skip the hardware prediction (no GPU model needed)."
            ),
        ] = False,
        dtype: Annotated[
            str, typer.Option("--dtype", help="Compute predictions at bf16 or fp16 peak.")
        ] = "bf16",
        tolerance: Annotated[
            float,
            typer.Option(
                "--tolerance", help="measured/predicted within 1 +- this is 'as predicted'."
            ),
        ] = 0.10,
        fmt: Annotated[
            str, typer.Option("--format", "-f", help="table, csv, json or markdown.")
        ] = "table",
        top: Annotated[
            int, typer.Option("--top", help="Rows per phase and level in the table format.")
        ] = 12,
        output: Annotated[
            Path | None,
            typer.Option(
                "-o", "--output", help="Write to a file: .html (report), .csv, .json or .md."
            ),
        ] = None,
    ) -> None:
        """Compare two deployments per phase, operator and category, against the hardware.

        Example: tracekit compare h100_*.parquet --vs h200_*.parquet --by category,op
        """
        from rich.console import Console

        from tracekit.compare import compare as do_compare

        if fmt not in FORMATS:
            raise TracekitError(f"Unknown output format {fmt!r}; use one of {', '.join(FORMATS)}.")
        a, b = split_sides(list(runs))
        levels = ["phase", *[x.strip() for x in by.split(",") if x.strip()]]
        result = do_compare(
            a,
            b,
            label_a=label_a,
            label_b=label_b,
            gpu_a=gpu_a,
            gpu_b=gpu_b,
            tp_a=tp_a,
            tp_b=tp_b,
            levels=levels,
            per=per,
            ranks=ranks,
            phases=not no_phases,
            predict=not no_predict,
            dtype=dtype,
            tolerance=tolerance,
        )
        if output is not None and output.suffix.lower() in (".html", ".htm"):
            try:
                from tracekit.report import write_compare_report
            except ImportError:
                raise TracekitError(
                    "The HTML report needs tracekit.report, which this install lacks."
                ) from None
            write_compare_report(result, output)
            Console(stderr=True).print(f"wrote {output}", highlight=False)
            return
        if output is not None:
            out_fmt = _SUFFIX_FORMAT.get(output.suffix.lower(), fmt if fmt != "table" else "csv")
            output.write_text(to_text(result, out_fmt) + "\n", encoding="utf-8")
            Console(stderr=True).print(f"wrote {output} ({out_fmt})", highlight=False)
            return
        if fmt == "table":
            render(result, Console(width=None if sys.stdout.isatty() else 170), top)
        else:
            print(to_text(result, fmt))

    @app.command()
    def gpus(
        as_json: Annotated[
            bool,
            typer.Option(
                "--json", help="Print the whole table, sources and notes included, as JSON."
            ),
        ] = False,
    ) -> None:
        """List the GPU table compare predicts from (dense TFLOP/s, GB/s, sources).

        Example: tracekit gpus --json
        """
        from rich.console import Console
        from rich.table import Table

        from tracekit.gpus import as_records

        recs = as_records()
        if as_json:
            print(json.dumps(recs, indent=1))
            return
        t = Table(
            title="GPU table (dense tensor TFLOP/s; GB/s; link = bidirectional total per GPU)",
            title_justify="left",
        )
        for col in (
            "key",
            "name",
            "bf16",
            "fp16",
            "mem GB/s",
            "mem GB",
            "link",
            "link GB/s",
            "PCIe",
            "source",
        ):
            t.add_column(col, overflow="fold")
        for r in recs:
            t.add_row(
                r["key"],
                r["name"],
                _num(r["bf16_tflops"], "g"),
                _num(r["fp16_tflops"], "g"),
                _num(r["mem_bw_gbps"], "g"),
                r["mem_gb"],
                r["link"],
                _num(r["link_gbps"], "g"),
                f"Gen{r['pcie_gen']} {r['pcie_gbps']:g}" if r["pcie_gen"] else "",
                r["source"],
            )
        Console(width=None if sys.stdout.isatty() else 220).print(t)


def to_text(result: CompareResult, fmt: str) -> str:
    """The result as ``csv``, ``json`` or ``markdown`` text."""
    from tracekit.sql import format_table

    if fmt == "json":
        return json.dumps(result.to_dict(), indent=1)
    if fmt == "csv":
        return format_table(result.rows, "csv")
    if fmt == "markdown":
        head = [
            f"# Compare: A = {result.a.label}, B = {result.b.label}",
            "",
            f"Ratio is B/A (above 1: B takes longer). Times in ns per unit; ranks: {result.ranks}.",
            "",
            *[f"- {v}" for v in result.verdicts["verdict"]],
            *[f"- note: {n}" for n in result.notes],
            "",
            "",
        ]
        return "\n".join(head) + format_table(result.rows, "markdown")
    raise TracekitError(f"Unknown output format {fmt!r}; use table, csv, json or markdown.")
