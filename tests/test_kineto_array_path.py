"""The Kineto reader's fast path: the ``traceEvents`` array read on its own.

The fast path copies the array's text to a temporary file and parses the header
keys around it with ``json``; the slow path parses the whole document in DuckDB.
Both must give the same table.  Expected numbers come from ``json.load`` of the
raw file, counted here in plain Python, never from the reader.
"""

from __future__ import annotations

import collections
import functools
import gzip
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from tracekit.errors import TracekitError
from tracekit.readers import kineto, kineto_load

KINETO = Path(__file__).parents[2] / "shared" / "traces" / "kineto"
EXAMPLES = Path(__file__).parents[1] / "examples" / "traces" / "h200_tp4" / "torch"

# Real traces of every shape at hand: keys only before the array (hta sampled,
# compact one-line JSON), keys after it too (cpu_only and nccl_data: an "INFO"
# list of log lines holding "]"; Qwen: deviceProperties, a list of objects, after
# the array), the 2021 format, ROCm, ns resolution.
REAL = [
    "hta/sampled_rank-0.json.gz",
    "hta/cpu_only_rank34.json.gz",
    "hta/nccl_data.json.gz",
    "hta/ns_resolution_rank0.json.gz",
    "hta/mi250_minitoy_train_ROCm6_2_kineto.json.gz",
    "kineto-2021/resnet50_worker0.pt.trace.json.gz",
    "tracelens/Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz",
    "tracelens/gaunernst_bert-small-uncased__1016001.json.gz",
    "tracelens/vllm_prefilldecode_piecewise/graph_execution.json.gz",
]


def load_raw(path: Path) -> Any:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        return json.load(fh)


X_CATS = {
    "kernel", "gpu_memcpy", "memcpy", "gpu_memset", "memset", "cuda_runtime", "cuda_driver",
    "runtime", "cuda_sync", "user_annotation", "gpu_user_annotation", "cpu_op", "operator",
}  # fmt: skip


def kept(e: dict[str, Any]) -> bool:
    """Whether the reader keeps a raw event (X of a category it reads, process names,
    flow ends)."""
    cat = str(e.get("cat", "")).lower()
    if e.get("ph") == "X":
        module = cat == "python_function" and str(e.get("name", "")).startswith("nn.Module: ")
        return "ts" in e and (cat in X_CATS or module)
    if e.get("ph") == "M":
        return e.get("name") == "process_name"
    return e.get("ph") == "f" and cat in ("ac2g", "async", "async_cpu_to_gpu") and "ts" in e


def ev_rows(fn: Any, path: Path) -> tuple[dict[str, Any] | None, list[tuple[Any, ...]] | None]:
    """Header and ``ev`` rows from one of the two loading paths."""
    con = duckdb.connect()
    try:
        header = fn(con, path)
        rows = con.execute("SELECT * FROM ev").fetchall() if header is not None else None
    finally:
        con.close()
    return header, rows


def sorted_rows(t: pa.Table) -> list[tuple[Any, ...]]:
    cols = [t.column(c).to_pylist() for c in t.column_names]
    return sorted(zip(*cols, strict=True), key=repr)


@pytest.fixture
def tmpdir_for_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the reader's temporary files at an empty folder of our own."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every whole-document parse (the fallback)."""
    calls: list[Path] = []
    slow = kineto_load._load_document

    def spy(con: duckdb.DuckDBPyConnection, path: Path, *rest: Any) -> dict[str, Any]:
        calls.append(path)
        return slow(con, path, *rest)

    monkeypatch.setattr(kineto_load, "_load_document", spy)
    return calls


# --- real traces -------------------------------------------------------------------


@pytest.mark.skipif(not KINETO.is_dir(), reason="shared/traces/kineto is absent")
@pytest.mark.parametrize("name", REAL)
def test_array_path_matches_whole_document(name: str, tmpdir_for_copies: Path) -> None:
    path = KINETO / name
    doc = load_raw(path)
    fast_header, fast = ev_rows(kineto_load._load_array, path)
    slow_header, slow = ev_rows(kineto_load._load_document, path)
    assert fast_header is not None and fast is not None  # the fast path took it
    assert fast == slow and fast_header == slow_header
    # Independent: the events kept (X events of the categories read, process names,
    # flow ends), and the header's values.
    want = collections.Counter(e["ph"] for e in doc["traceEvents"] if kept(e))
    assert collections.Counter(r[0] for r in fast) == want
    for key in ("distributedInfo", "deviceProperties", "schemaVersion", "baseTimeNanoseconds"):
        assert fast_header[key] == doc.get(key), key
    assert list(tmpdir_for_copies.iterdir()) == []


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/traces/h200_tp4 is absent")
def test_read_is_the_same_either_way(
    monkeypatch: pytest.MonkeyPatch, no_fallback: list[Path]
) -> None:
    path = EXAMPLES / "trace_rank1.pt.trace.json.gz"
    fast = kineto.read(path)
    assert no_fallback == []
    monkeypatch.setattr(kineto_load, "_load_array", lambda con, path, *rest: None)
    slow = kineto.read(path)
    assert len(no_fallback) == 1
    assert fast.table.schema == slow.table.schema
    assert sorted_rows(fast.table) == sorted_rows(slow.table)
    assert fast.meta == slow.meta
    doc = load_raw(path)
    assert fast.meta["rank"] == doc["distributedInfo"]["rank"] == 1


# --- made-up documents ---------------------------------------------------------------


def _events(n: int) -> list[dict[str, Any]]:
    ev: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": 7, "tid": 0, "args": {"name": "python ]"}}
    ]
    for i in range(n):
        ev.append(
            {
                "ph": "X",
                "cat": "cuda_runtime",
                "name": "cudaLaunchKernel",
                "pid": 7,
                "tid": 7,
                "ts": 10.0 * i,
                "dur": 2.0,
                "args": {"correlation": i, "dims": [[1, 2], [3]]},
            }
        )
        ev.append(
            {
                "ph": "X",
                "cat": "kernel",
                "name": f'k]{i}}}, {{"x": [',
                "pid": 0,
                "tid": 7,
                "ts": 10.0 * i + 1,
                "dur": 5.0,
                "args": {"correlation": i, "device": 0, "stream": 7},
            }
        )
    ev.append(
        {
            "ph": "X",
            "cat": "user_annotation",
            "name": "step",
            "pid": 7,
            "tid": 7,
            "ts": 0.0,
            "dur": 10.0 * n + 10,
            "args": {},
        }
    )
    return ev


def _write(
    path: Path, before: str, events: list[dict[str, Any]], after: str, indent: int | None
) -> None:
    arr = json.dumps(events, indent=indent)
    text = "{" + before + '"traceEvents": ' + arr + after + "}"
    json.loads(text)  # the test documents themselves are valid JSON
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


TAILS = {
    # keys after the array, lists among them, "]" in their strings
    "lists_after": (
        '"schemaVersion": 1, ',
        ', "INFO": ["a]", "b ]}", "]"], "deviceProperties": [{"id": 0, "name": "GPU ]"}], '
        '"distributedInfo": {"rank": 3, "world_size": 4}, "traceName": "x.json"',
    ),
    # the key's text inside a header string before the real key
    "decoy_key": (
        '"note": "\\"traceEvents\\": [", "distributedInfo": {"rank": 2, "world_size": 4}, ',
        "",
    ),
    # a header after the array longer than the first window searched
    "long_tail": (
        '"distributedInfo": {"rank": 1, "world_size": 4}, ',
        ', "INFO": ' + json.dumps([f"line {i} ]" for i in range(40_000)]),
    ),
    # compact one-line JSON, nothing after the array
    "nothing_after": ('"distributedInfo": {"rank": 0, "world_size": 4}, ', ""),
}


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("shape", list(TAILS))
def test_made_up_layouts_take_the_fast_path(
    shape: str,
    indent: int | None,
    suffix: str,
    tmp_path: Path,
    tmpdir_for_copies: Path,
    no_fallback: list[Path],
) -> None:
    before, after = TAILS[shape]
    path = tmp_path / f"{shape}{suffix}"
    events = _events(50)
    _write(path, before, events, after, indent)
    doc = load_raw(path)
    raw = kineto.read(path)
    assert no_fallback == []
    assert list(tmpdir_for_copies.iterdir()) == []
    # Independent expectations from the document.
    kinds = collections.Counter(
        {"kernel": "kernel", "cuda_runtime": "runtime", "user_annotation": "range"}[e["cat"]]
        for e in doc["traceEvents"]
        if e["ph"] == "X"
    )
    got = collections.Counter(raw.table.column("kind").to_pylist())
    assert got == kinds
    assert raw.meta["rank"] == doc["distributedInfo"]["rank"]
    names = {e["name"] for e in doc["traceEvents"] if e["ph"] == "X"}
    assert set(raw.table.column("name").to_pylist()) == names
    if "deviceProperties" in doc:
        assert raw.meta["gpus"] == {"0": "GPU ]"}
    # And the whole-document parse agrees.
    slow_header, slow = ev_rows(kineto_load._load_document, path)
    fast_header, fast = ev_rows(kineto_load._load_array, path)
    assert fast == slow and fast_header == slow_header


def test_empty_event_list(tmp_path: Path, tmpdir_for_copies: Path) -> None:
    path = tmp_path / "empty_list.json"
    path.write_text('{"schemaVersion": 1, "traceEvents": [ ], "traceName": "t"}')
    header, rows = ev_rows(kineto_load._load_array, path)
    assert header is not None and rows == []
    assert list(tmpdir_for_copies.iterdir()) == []


# --- bad input: the same one sentence as the whole-document parse ----------------------


@pytest.mark.skipif(not KINETO.is_dir(), reason="shared/traces/kineto is absent")
def test_bad_inputs_fail_as_before_and_leave_no_files(
    tmp_path: Path, tmpdir_for_copies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = (KINETO / "hta" / "sampled_rank-0.json.gz").read_bytes()
    plain = gzip.decompress(data)
    cases = {
        "truncated.json.gz": data[: len(data) // 2],
        "truncated.json": plain[:50_000],
        "cut_after_array.json": plain[: plain.rindex(b"]") + 1],
        "other.json": b'{"name": "not a trace", "values": [1, 2]}',
        "list_not_array.json": b'{"traceEvents": {"ph": "X"}}',
        "array.json": b'[{"ph": "X", "ts": 1}]',
        "bad_event.json": b'{"traceEvents": [{"ph": "X", "ts": "soon"}]}',
        "not_object_event.json": b'{"traceEvents": [{"ph": "X", "ts": 1}, 5]}',
        "text.json": b"hello world",
        "empty.json": b"",
    }
    messages = {}
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(TracekitError) as info:
            kineto.read(p)
        messages[name] = str(info.value)
        assert messages[name].endswith(".") and "\n" not in messages[name], name
        assert list(tmpdir_for_copies.iterdir()) == [], name
    monkeypatch.setattr(kineto_load, "_load_array", lambda con, path, *rest: None)
    for name in cases:
        with pytest.raises(TracekitError) as info:
            kineto.read(tmp_path / name)
        assert str(info.value) == messages[name], name


def test_no_temporary_folder_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_fallback: list[Path]
) -> None:
    path = tmp_path / "t.json"
    _write(path, '"distributedInfo": {"rank": 5, "world_size": 8}, ', _events(3), "", None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    raw = kineto.read(path)
    assert len(no_fallback) == 1  # parsed whole instead
    assert raw.meta["rank"] == 5
    kinds = collections.Counter(raw.table.column("kind").to_pylist())
    assert kinds == {"kernel": 3, "runtime": 3, "range": 1}


# --- the array cut into parts, parsed at once ------------------------------------------


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Cut arrays of a few MB into parts of about 1 MB; record each read's part count."""
    monkeypatch.setattr(kineto_load, "_PART_MIN", 64 << 10)
    monkeypatch.setattr(kineto_load, "_PART_MAX", 1 << 20)
    counts: list[int] = []
    copy = kineto_load._copy_array

    def spy(path: Path, parts: list[Path], ready: Callable[[], None]) -> dict[str, Any] | None:
        doc = copy(path, parts, ready)
        counts.append(len(parts))
        return doc

    monkeypatch.setattr(kineto_load, "_copy_array", spy)
    return counts


@pytest.mark.skipif(not KINETO.is_dir(), reason="shared/traces/kineto is absent")
@pytest.mark.parametrize("name", [REAL[2], REAL[3], REAL[5], REAL[6]])  # pretty-printed
def test_parts_give_the_rows_of_the_whole_document_in_order(
    name: str, tmpdir_for_copies: Path, small_parts: list[int]
) -> None:
    path = KINETO / name
    fast_header, fast = ev_rows(kineto_load._load_array, path)
    assert small_parts and small_parts[0] > 2, small_parts  # it was cut
    slow_header, slow = ev_rows(kineto_load._load_document, path)
    assert fast is not None and fast == slow and fast_header == slow_header
    assert list(tmpdir_for_copies.iterdir()) == []


def test_a_cut_inside_a_nested_list_falls_back(
    tmp_path: Path,
    tmpdir_for_copies: Path,
    small_parts: list[int],
    no_fallback: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pretty-printed lists of objects inside events look like the boundary between
    two events; a part cut there is not an array of whole events, DuckDB refuses it,
    and the file is parsed whole: same rows, nothing left behind."""
    events = _events(20)
    for e in events:
        if e.get("cat") == "cuda_runtime":
            e["args"]["inputs"] = [{"shape": [i, i + 1], "dtype": "float"} for i in range(40)]
    monkeypatch.setattr(kineto_load, "_PART_MIN", 2 << 10)
    monkeypatch.setattr(kineto_load, "_PART_MAX", 16 << 10)
    path = tmp_path / "nested.json"
    _write(path, '"distributedInfo": {"rank": 1, "world_size": 2}, ', events, "", 2)
    raw = kineto.read(path)
    assert small_parts and small_parts[0] > 2
    assert len(no_fallback) == 1
    assert list(tmpdir_for_copies.iterdir()) == []
    doc = load_raw(path)
    kinds = collections.Counter(
        {"kernel": "kernel", "cuda_runtime": "runtime", "user_annotation": "range"}[e["cat"]]
        for e in doc["traceEvents"]
        if e["ph"] == "X"
    )
    assert collections.Counter(raw.table.column("kind").to_pylist()) == kinds


# --- parses started early ---------------------------------------------------------------


@pytest.mark.skipif(not KINETO.is_dir(), reason="shared/traces/kineto is absent")
def test_a_parse_started_early_is_taken_over(
    monkeypatch: pytest.MonkeyPatch, tmpdir_for_copies: Path
) -> None:
    """``start_early`` parses on a thread of its own; the read of that file takes
    the parse over instead of parsing again, and gets the rows a plain read gets."""
    path = KINETO / REAL[2]
    plain = kineto.read(path)
    calls: list[Path] = []
    load_new = kineto_load._load_new

    def spy(p: Path, *rest: Any) -> Any:
        calls.append(p)
        return load_new(p, *rest)

    monkeypatch.setattr(kineto_load, "_load_new", spy)
    kineto_load.start_early([path], 1)
    early = kineto.read(path)
    assert calls == [path]
    assert early.table.equals(plain.table)
    assert kineto_load._EARLY == {} and kineto_load._ACTIVE == 0
    assert kineto_load._DB is None
    assert list(tmpdir_for_copies.iterdir()) == []


def test_drain_ends_parses_nobody_took_over(tmp_path: Path, tmpdir_for_copies: Path) -> None:
    path = tmp_path / "t.json"
    _write(path, "", _events(50), "", 2)
    kineto_load.start_early([path], 1)
    kineto_load.drain_early()
    assert kineto_load._EARLY == {} and kineto_load._ACTIVE == 0
    assert kineto_load._DB is None
    assert list(tmpdir_for_copies.iterdir()) == []


# --- decompression and start-up ------------------------------------------------------------


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="examples/traces/h200_tp4 is absent")
@pytest.mark.parametrize("step", [1 << 12, 4 << 20])
def test_gunzip_gives_the_bytes_gzip_gives(tmp_path: Path, step: int) -> None:
    """The copy's decompressor against the standard library's, on a real trace and
    on two gzip members back to back (``cat a.gz b.gz``, which gzip reads as one)."""
    real = sorted(EXAMPLES.glob("*.json.gz"))[0].read_bytes()
    two = tmp_path / "two.json.gz"
    two.write_bytes(real + gzip.compress(b'{"more": 1}'))
    for path in (sorted(EXAMPLES.glob("*.json.gz"))[0], two):
        with path.open("rb") as raw:
            src = kineto_load._Gunzip(raw)
            got = b"".join(iter(functools.partial(src.read, step), b""))
        assert got == gzip.decompress(path.read_bytes())


def test_gunzip_refuses_a_file_cut_short(tmp_path: Path) -> None:
    whole = gzip.compress(json.dumps({"traceEvents": _events(200)}).encode())
    for cut in (12, len(whole) // 2, len(whole) - 3):
        path = tmp_path / f"cut{cut}.json.gz"
        path.write_bytes(whole[:cut])
        with path.open("rb") as raw, pytest.raises(EOFError):
            src = kineto_load._Gunzip(raw)
            while src.read(1 << 16):
                pass


def test_the_reader_module_leaves_duckdb_unimported() -> None:
    """The command line copies the first files while DuckDB imports: the module
    that copies them must not import it (DuckDB comes with the first parse)."""
    code = (
        "import sys, tracekit.readers.kineto_load, tracekit.inputs, tracekit.readers; "
        "print(sorted(m for m in ('duckdb', 'numpy', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
