"""The ``tracekit`` command: a thin typer layer over the library.

Expected failures are :class:`TracekitError`; they are caught only here and
printed as one line with exit code 1.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tracekit import __version__
from tracekit.cpus import usable_cpus
from tracekit.errors import TracekitError

app = typer.Typer(
    name="tracekit",
    help="Post-process GPU profiler traces of LLM inference: ingest, query, compare.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _Lazy:
    """A rich Console made on first use: rich costs 50 ms to import, and a command
    that prints plain lines (an ingest into a pipe) need not import it."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.console: Any = None

    def get(self) -> Any:
        if self.console is None:
            from rich.console import Console

            self.console = Console(**self.kwargs)
        return self.console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


err: Any = _Lazy(stderr=True, soft_wrap=True)
out: Any = _Lazy(soft_wrap=True, markup=False, highlight=False)


def _warn(text: str) -> None:
    """One warning line on stderr (yellow on a terminal)."""
    if sys.stderr.isatty():
        err.print(f"[yellow]warning:[/] {text}", highlight=False)
    else:
        print(f"warning: {text}", file=sys.stderr)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


#: True when running as the console script (:func:`main`), not inside a caller's process.
_console_script = False


class _NoPandas:
    """Refuses to import pandas (see :func:`_without_pandas`); a meta path finder
    (``importlib.abc.MetaPathFinder`` in all but name: importing that costs 20 ms)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not used by tracekit ingest")


def _without_pandas() -> None:
    """Keep pandas out of this process: nothing in a local ingest uses it, but
    pyarrow imports it (0.2-0.3 s of CPU, a tenth of a small ingest) on its first
    conversion of a Python value, only to ask whether that value is a pandas
    object, and goes on without it when the import fails. Only for the console
    script's ingest command, whose process ends with the command."""
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())


def _parse_early(paths: list[Path], jobs: int | None) -> None:
    """Start parsing the first Kineto files before NumPy and Arrow are imported.

    DuckDB parses without the GIL, so on a small run the parse of the first files
    (one per worker) overlaps the 0.3-0.5 s those imports take; the ingest then
    takes the parses over.  Only for the console script, whose process ends with
    the command.  Inputs that are not all Kineto files, or that ingest will refuse,
    are left to ingest.
    """
    from tracekit.inputs import expand_inputs
    from tracekit.readers import sniff

    try:
        files = expand_inputs(paths)
        if not all(sniff(f) == "kineto" for f in files):
            return
    except TracekitError:
        return
    from tracekit.readers.kineto_load import start_early

    start_early(files, min(jobs or usable_cpus(), len(files)))


def _imports_done() -> None:
    """Turn automatic garbage collection back on (:func:`main` turns it off for the
    imports), leaving what was imported out of every later collection."""
    gc.freeze()
    gc.enable()


def _end_early() -> None:
    """End the early parses that ingest did not take over (it failed before reading
    those files): their temporary files go before the process ends."""
    if "tracekit.readers.kineto_load" in sys.modules:
        from tracekit.readers.kineto_load import drain_early

        drain_early()


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Trace files or folders (.nsys-rep, .qdrep, .sqlite, .json, .json.gz); several files are the ranks of one run.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Parquet file to write (default: RUN.parquet here).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run label (default: the first file's stem).")] = None,
    phase_map: Annotated[str, typer.Option("--phase-map", help="Preset (auto, tracekit, lightllm, vllm, sglang, trtllm) or a TOML file.")] = "auto",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Files ingested in parallel (default: the CPUs this process may use).")] = None,
    dask: Annotated[str | None, typer.Option("--dask", help="Scheduler address (tcp://host:8786) of an existing Dask cluster: ingest each file on a worker and write a folder of Parquet parts, one per input (-o names the folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest traces into one attributed events table (Parquet).

    Example: tracekit ingest examples/traces/h200_tp2/nsys -o tp2.parquet
    """
    if dask is None and _console_script:
        _without_pandas()
        _parse_early(paths, jobs)
    from tracekit.ingest import ingest as do_ingest
    from tracekit.ingest import result_dict

    _imports_done()

    if dask is not None:
        from tracekit.dask_ingest import ingest_dask

        out_dir = output or Path(run or "run")
        dres = ingest_dask(paths, out_dir, dask, run=run, phase_map=phase_map)
        for w in dres.warnings:
            _warn(w)
        out.print(
            f"wrote {len(dres.parts)} parts to {dres.out}/  run={dres.run}\n"
            f"  events {dres.rows:,}  kernels {dres.kernels:,}  ranks {len(dres.ranks)}\n"
            f"  coverage: phase {_pct(dres.coverage_phase)} of GPU kernel time, op {_pct(dres.coverage_op)}\n"
            f"  {dres.seconds:.2f} s"
        )
        return

    bar: Any = contextlib.nullcontext()
    progress = None
    if not as_json and sys.stderr.isatty():  # rich is imported for terminals only
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        bar = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err.get(),
            transient=True,
        )
        task = bar.add_task("ingesting", total=None)

        def progress(stage: str, i: int, n: int, path: Path) -> None:
            bar.update(task, total=n, completed=i + (stage == "done"), description=f"{stage} {path.name}")

    try:
        with bar:
            res = do_ingest(paths, output, run=run, phase_map=phase_map, jobs=jobs, progress=progress)
    finally:
        _end_early()
    for w in res.warnings:
        _warn(w)
    if as_json:
        print(json.dumps(result_dict(res), indent=2, default=str))
        return
    md = res.metadata
    print(
        f"wrote {res.out}  run={res.run}\n"
        f"  events {res.rows:,}  kernels {res.kernels:,}  ranks {len(res.ranks)}  "
        f"GPUs {len(res.gpus) or 'unknown'} ({', '.join(sorted(set(res.gpus.values()))) or 'model not recorded'})\n"
        f"  coverage: phase {_pct(res.coverage_phase)} of GPU kernel time, op {_pct(res.coverage_op)}"
        f"  (phase map {md['phase_map']['name'] if md.get('phase_map') else 'none'})\n"
        f"  {res.seconds:.2f} s"
    )


@app.command()
def info(
    run_file: Annotated[Path, typer.Argument(help="A Parquet file written by tracekit ingest.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print metadata and counts as JSON.")] = False,
) -> None:
    """Show a run's metadata (sources, GPUs, phase map, coverage) and event counts.

    Example: tracekit info tp2.parquet
    """
    from tracekit.ingest import read_metadata, summarize

    md = read_metadata(run_file)
    counts = summarize([run_file])
    if as_json:
        print(json.dumps({"metadata": md, "counts": counts}, indent=2, default=str))
        return
    cov = md.get("coverage", {})
    out.print(f"run {md.get('run')}  (schema v{md.get('schema_version')}, tracekit {md.get('tracekit_version')}, ingested {md.get('ingested_at')})", highlight=False)
    for s in md.get("sources", []):
        out.print(f"  source {s['path']}  [{s['format']}, {s.get('profiler')} {s.get('profiler_version') or ''}]  ranks {s.get('ranks')}  phase map {s.get('phase_map')} ({s.get('step_mode')} steps)", highlight=False)
    gpus = md.get("gpus") or {}
    out.print(f"  GPUs: {', '.join(f'{k}: {v}' for k, v in sorted(gpus.items())) or 'not recorded in the trace'}", highlight=False)
    out.print(f"  ranks {md.get('ranks')}  world size {md.get('world_size')}", highlight=False)
    out.print(f"  coverage: phase {_pct(cov.get('phase'))} of GPU kernel time, op {_pct(cov.get('op'))}", highlight=False)
    for kind, c in counts.items():
        ms = (c["dur_ns"] or 0) / 1e6
        out.print(f"  {kind:<8} {c['events']:>12,} events  {ms:>14,.3f} ms summed", highlight=False)
    for w in md.get("warnings", []):
        out.print(f"  warning: {w}", highlight=False)


def _register_optional() -> None:
    """Commands that live in their own modules register themselves here."""
    import importlib

    for mod in ("tracekit.sql_cli", "tracekit.comm_cli", "tracekit.compare_cli", "tracekit.report_cli"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue
            raise
        module.register(app)


_register_optional()


def version_callback(value: bool) -> None:
    if value:
        print(f"tracekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Post-process GPU profiler traces of LLM inference."""
    if ctx.invoked_subcommand != "ingest":  # only ingest waits for its imports
        gc.enable()


def main() -> None:
    """The console script: run the command, then leave without interpreter teardown.

    Every command has written and closed its outputs when ``app()`` returns; what
    is left is freeing imported modules and native libraries (DuckDB, Arrow,
    NumPy), 0.1-0.3 s of a short command, so the process ends with ``os._exit``
    once stdout and stderr are flushed.
    """
    global _console_script
    _console_script = True
    # No command multiplies matrices, and OpenBLAS's pool (started when NumPy is
    # imported) spins idle threads: 0.15 s of CPU on a 2-core machine, a tenth of
    # a small ingest.  A value the user set is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The imports allocate a few hundred thousand objects that live as long as the
    # process; collecting during them is 0.06-0.09 s of CPU.  Collection resumes
    # once the command has imported what it needs (:func:`_imports_done`).
    gc.disable()
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except TracekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        code = 130
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError):  # a closed pipe (| head): nothing left to say
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    main()
