"""The trace files a command names: files as given, folders expanded.

Standard library only (and :mod:`tracekit.readers`' names), so the command line can
list its inputs before NumPy and Arrow are imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tracekit.errors import TracekitError
from tracekit.readers import KINETO_SUFFIXES, NSYS_REPORT_SUFFIXES, SQLITE_SUFFIXES

TRACE_SUFFIXES = NSYS_REPORT_SUFFIXES + SQLITE_SUFFIXES + KINETO_SUFFIXES


def run_label(path: Path) -> str:
    """The default run label: the file name without its trace suffixes (a folder
    given as the first input names the run instead).

    >>> run_label(Path("/x/h100_tp2.pt.trace.json.gz"))
    'h100_tp2'
    """
    name = path.name
    for suffix in (".gz", ".json", ".trace", ".pt", *NSYS_REPORT_SUFFIXES, *SQLITE_SUFFIXES):
        name = name.removesuffix(suffix)
    return name or path.name


def _looks_like_trace(path: Path) -> bool:
    """In a folder, a .json file counts only if it looks like a Kineto trace (a
    ``traceEvents`` key in its first MiB), so side files such as program facts or
    configs are left out; Nsight files always count."""
    if not path.name.lower().endswith(KINETO_SUFFIXES):
        return True
    import gzip

    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            # Profilers write the key within the first few kB; look further only if not.
            head = fh.read(64 << 10)
            if b'"traceEvents"' in head:
                return True
            head += fh.read((1 << 20) - len(head))
    except (OSError, EOFError):
        return True  # unreadable: let the reader say why
    return b'"traceEvents"' in head


def _stem(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffix in (*NSYS_REPORT_SUFFIXES, *SQLITE_SUFFIXES):
        name = name.removesuffix(suffix)
    return str(path.parent / name)


def _prefer_exports(files: list[Path]) -> list[Path]:
    """A folder holding both a report and its SQLite export has one trace, not two:
    keep the export (no nsys needed to read it)."""
    exports = {_stem(f) for f in files if f.name.lower().endswith(SQLITE_SUFFIXES)}
    return [
        f
        for f in files
        if not (f.name.lower().endswith(NSYS_REPORT_SUFFIXES) and _stem(f) in exports)
    ]


def expand_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files named, plus the trace files inside named folders (sorted)."""
    if not paths:
        raise TracekitError("No input given: name one or more trace files or folders.")
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and f.name.lower().endswith(TRACE_SUFFIXES) and _looks_like_trace(f)
            )
            found = _prefer_exports(found)
            if not found:
                raise TracekitError(
                    f"Folder {p} holds no trace files (.nsys-rep, .qdrep, .sqlite, .json, .json.gz)."
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise TracekitError(f"Input {p} does not exist.")
    return files
