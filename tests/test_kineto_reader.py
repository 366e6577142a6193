"""The Kineto reader against every real trace in shared/traces/kineto.

Expected numbers come from the raw JSON, loaded here with ``json``/``gzip`` and
counted in plain Python, never from the reader.
"""

from __future__ import annotations

import collections
import gzip
import itertools
import json
import tarfile
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tracekit import phasemap
from tracekit.errors import TracekitError
from tracekit.readers import RawTrace, kineto

KINETO = Path(__file__).parents[2] / "shared" / "traces" / "kineto"
pytestmark = pytest.mark.skipif(not KINETO.is_dir(), reason="shared/traces/kineto is absent")

GZ_FILES = (
    sorted(p.relative_to(KINETO).as_posix() for p in KINETO.rglob("*.json.gz"))
    if KINETO.is_dir()
    else []
)
BIG = "hta/df_index_resolver_54MB.json.gz"

GPU_CATS = {
    "kernel": "kernel",
    "gpu_memcpy": "memcpy",
    "memcpy": "memcpy",
    "gpu_memset": "memset",
    "memset": "memset",
}
RUNTIME_CATS = {"cuda_runtime", "cuda_driver", "runtime"}


# --- independent expectations from the raw JSON ----------------------------------


def load_raw(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        return json.load(fh)


def expected(doc: dict[str, Any]) -> dict[str, Any]:
    xs = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    cat = [str(e.get("cat", "")).lower() for e in xs]
    kinds: collections.Counter[str] = collections.Counter()
    nccl = 0
    for e, c in zip(xs, cat, strict=True):
        if c in GPU_CATS:
            kinds[GPU_CATS[c]] += 1
            if GPU_CATS[c] == "kernel" and "nccl" in e["name"].lower():
                nccl += 1
        elif c in RUNTIME_CATS:
            kinds["runtime"] += 1
        elif (
            c in ("user_annotation", "gpu_user_annotation")
            or (c == "python_function" and e["name"].startswith("nn.Module: "))
            or (c == "operator" and e["name"].startswith("ProfilerStep#"))
        ):
            kinds["range"] += 1
    rank = (doc.get("distributedInfo") or {}).get("rank")
    return {"kinds": kinds, "nccl": nccl, "rank": rank}


def exact_ns(us: float) -> int:
    """Round a float microsecond value to ns using its exact binary value."""
    return int((Decimal(us) * 1000).to_integral_value(rounding=ROUND_HALF_UP))


def exact_end_ns(ts: float, dur: float) -> int:
    return int(((Decimal(ts) + Decimal(dur)) * 1000).to_integral_value(rounding=ROUND_HALF_UP))


# --- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dlrm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dlrm")
    with tarfile.open(KINETO / "param-dlrm-8rank" / "dlrm_kineto.tar.gz") as tf:
        tf.extractall(out, filter="data")
    return out


@pytest.fixture(scope="module")
def cache() -> dict[str, tuple[RawTrace, dict[str, Any]]]:
    return {}


def get(
    cache: dict[str, tuple[RawTrace, dict[str, Any]]], path: Path
) -> tuple[RawTrace, dict[str, Any]]:
    key = str(path)
    if key not in cache:
        t0 = time.perf_counter()
        raw = kineto.read(path)
        raw.meta["_test_read_s"] = time.perf_counter() - t0
        cache[key] = (raw, load_raw(path))
    return cache[key]


def kind_counts(t: pa.Table) -> dict[str, int]:
    vc = pc.value_counts(t.column("kind")).to_pylist()
    return {d["values"]: d["counts"] for d in vc}


# --- every trace -----------------------------------------------------------------


@pytest.mark.parametrize("name", GZ_FILES)
def test_counts_match_raw_json(name: str, cache: dict[str, Any]) -> None:
    raw, doc = get(cache, KINETO / name)
    exp = expected(doc)
    got = kind_counts(raw.table)
    for kind in ("kernel", "memcpy", "memset", "runtime", "range"):
        assert got.get(kind, 0) == exp["kinds"].get(kind, 0), kind
    kernels = raw.table.filter(pc.equal(raw.table.column("kind"), "kernel"))
    nccl = pc.sum(pc.match_substring(pc.utf8_lower(kernels.column("name")), "nccl")).as_py() or 0
    assert nccl == exp["nccl"]
    if exp["rank"] is not None:
        assert raw.meta["rank_source"] == "explicit"
        assert set(raw.table.column("rank").to_pylist()) == {exp["rank"]}
    else:
        assert raw.meta["rank_source"] == "order"
        assert set(raw.table.column("rank").to_pylist()) == {0}
    # The contract's required columns are never NULL.
    for col in ("pid", "kind", "name", "start_ns", "end_ns"):
        assert raw.table.column(col).null_count == 0, col
    assert pc.all(
        pc.greater_equal(raw.table.column("end_ns"), raw.table.column("start_ns"))
    ).as_py() in (True, None)


@pytest.mark.parametrize("name", GZ_FILES)
def test_gpu_activities_carry_launching_pid_and_correlation(
    name: str, cache: dict[str, Any]
) -> None:
    raw, doc = get(cache, KINETO / name)
    ev = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    launch = {
        e["args"]["correlation"]: e["pid"]
        for e in ev
        if str(e.get("cat", "")).lower() in RUNTIME_CATS and "correlation" in e.get("args", {})
    }
    want = collections.Counter(
        (launch.get(e["args"]["correlation"]), e["args"]["correlation"])
        for e in ev
        if str(e.get("cat", "")).lower() in GPU_CATS
    )
    t = raw.table.filter(
        pc.is_in(raw.table.column("kind"), pa.array(["kernel", "memcpy", "memset"]))
    )
    pids, corrs = t.column("pid").to_pylist(), t.column("correlation").to_pylist()
    got = collections.Counter(
        (p if c in launch else None, c) for p, c in zip(pids, corrs, strict=True)
    )
    assert got == want
    assert t.column("tid").null_count == t.num_rows
    assert t.column("device").null_count == 0 and t.column("stream").null_count == 0


@pytest.mark.parametrize("name", GZ_FILES)
def test_ns_conversion_is_exact_and_adds_no_overlap(name: str, cache: dict[str, Any]) -> None:
    raw, doc = get(cache, KINETO / name)
    if (
        max((abs(e.get("ts", 0)) for e in doc["traceEvents"] if e.get("ph") == "X"), default=0)
        >= 2**43
    ):
        # Epoch-scale floats: check monotonic rounding only (the overlap test below).
        exact = False
    else:
        exact = True
    gpu = [
        e
        for e in doc["traceEvents"]
        if e.get("ph") == "X" and str(e.get("cat", "")).lower() in GPU_CATS
    ]
    want = sorted((exact_ns(e["ts"]), exact_end_ns(e["ts"], e.get("dur", 0))) for e in gpu)
    t = raw.table.filter(
        pc.is_in(raw.table.column("kind"), pa.array(["kernel", "memcpy", "memset"]))
    )
    got = sorted(zip(t.column("start_ns").to_pylist(), t.column("end_ns").to_pylist(), strict=True))
    if exact:
        assert got == want

    # Overlaps of consecutive activities on a stream: as many in ns as in the file.
    def overlaps(rows: list[tuple[Any, Any, float, float]]) -> int:
        by: dict[tuple[Any, Any], list[tuple[float, float]]] = collections.defaultdict(list)
        for dev, stream, s, e in rows:
            by[(dev, stream)].append((s, e))
        n = 0
        for ivs in by.values():
            ivs.sort()
            n += sum(1 for a, b in itertools.pairwise(ivs) if a[1] > b[0])
        return n

    raw_rows = [
        (
            e["args"].get("device", e["pid"]),
            e["args"].get("stream", e["tid"]),
            Decimal(e["ts"]),
            Decimal(e["ts"]) + Decimal(e.get("dur", 0)),
        )
        for e in gpu
    ]
    ns_rows = list(
        zip(
            t.column("device").to_pylist(),
            t.column("stream").to_pylist(),
            t.column("start_ns").to_pylist(),
            t.column("end_ns").to_pylist(),
            strict=True,
        )
    )
    assert overlaps(ns_rows) <= overlaps(raw_rows)  # type: ignore[arg-type]


def test_dlrm_eight_ranks(dlrm_dir: Path) -> None:
    files = sorted(dlrm_dir.rglob("*.pt.trace.json"))
    assert len(files) == 8
    metas = []
    for f in files:
        raw = kineto.read(f)
        exp = expected(load_raw(f))
        got = kind_counts(raw.table)
        assert got.get("kernel", 0) == exp["kinds"]["kernel"]
        assert got.get("runtime", 0) == exp["kinds"]["runtime"]
        assert set(raw.table.column("rank").to_pylist()) == {exp["rank"]}
        metas.append(raw.meta)
    assert sorted(m["rank"] for m in metas) == list(range(8))
    assert {m["world_size"] for m in metas} == {8}
    kineto.check_ranks(metas)
    with pytest.raises(TracekitError, match="both claim rank 3"):
        kineto.check_ranks([*metas, metas[3]])


def test_check_ranks_refuses_mixed_runs(dlrm_dir: Path, cache: dict[str, Any]) -> None:
    dl = kineto.read(sorted(dlrm_dir.rglob("*.pt.trace.json"))[0])
    other, _ = get(cache, KINETO / "hta" / "sampled_rank-1.json.gz")
    with pytest.raises(TracekitError, match="different runs"):
        kineto.check_ranks([dl.meta, other.meta])


# --- particular formats ------------------------------------------------------------


def test_big_trace_read_time_and_meta(cache: dict[str, Any]) -> None:
    raw, _ = get(cache, KINETO / BIG)  # read once per module; the read is timed there
    elapsed = raw.meta["_test_read_s"]
    print(f"\n{BIG}: {raw.table.num_rows} rows in {elapsed:.2f} s")
    assert elapsed < 30
    assert raw.meta["gpus"] == {"0": "Tesla V100-SXM2-32GB", "1": "Tesla V100-SXM2-32GB"}
    assert raw.meta["world_size"] == 2 and raw.meta["rank"] == 1
    assert raw.meta["profiler"] == "torch.profiler" and raw.meta["format"] == "kineto"
    assert [p["pid"] for p in raw.meta["processes"]] == [783658]


def test_cpu_only_trace_reads(cache: dict[str, Any]) -> None:
    raw, _doc = get(cache, KINETO / "hta" / "cpu_only_rank34.json.gz")
    assert kind_counts(raw.table).get("kernel", 0) == 0
    assert raw.table.column("device").null_count == raw.table.num_rows
    assert raw.meta["rank"] == 34 and raw.meta["world_size"] == 300


def test_kineto_2021_format(cache: dict[str, Any]) -> None:
    raw, doc = get(cache, KINETO / "kineto-2021" / "resnet50_worker0.pt.trace.json.gz")
    assert raw.meta["format"] == "kineto-2021"
    t = raw.table.filter(pc.equal(raw.table.column("kind"), "kernel"))
    # GPU rows there have tid "stream 7"; args carry stream 7 too.
    assert set(t.column("stream").to_pylist()) == {7}
    steps = [
        e["name"] for e in doc["traceEvents"] if str(e.get("name", "")).startswith("ProfilerStep#")
    ]
    ranges = (
        raw.table.filter(pc.equal(raw.table.column("kind"), "range")).column("name").to_pylist()
    )
    assert sorted(ranges) == sorted(steps)
    cpu = pc.sum(pc.equal(raw.table.column("kind"), "cpu_op")).as_py()
    assert cpu == sum(1 for e in doc["traceEvents"] if e.get("cat") == "Operator") - len(steps)


def test_rocm_hip_graph_launch_correlation(cache: dict[str, Any]) -> None:
    raw, doc = get(
        cache, KINETO / "tracelens" / "vllm_prefilldecode_piecewise" / "graph_execution.json.gz"
    )
    assert raw.meta["gpu_runtime"] == "hip"
    ev = doc["traceEvents"]
    launches = {e["args"]["correlation"]: e["pid"] for e in ev if e.get("name") == "hipGraphLaunch"}
    replayed = [e for e in ev if e.get("cat") == "kernel" and e["args"]["correlation"] in launches]
    assert replayed  # the trace does replay graphs
    t = raw.table.filter(
        pc.and_(
            pc.equal(raw.table.column("kind"), "kernel"),
            pc.is_in(raw.table.column("correlation"), pa.array(list(launches), pa.int64())),
        )
    )
    assert t.num_rows == len(replayed)
    assert set(t.column("pid").to_pylist()) == set(launches.values())


def test_gpu_user_annotation_is_not_a_launch_stack(cache: dict[str, Any]) -> None:
    raw, doc = get(cache, KINETO / "hta" / "nccl_data.json.gz")
    r = raw.table.filter(pc.equal(raw.table.column("kind"), "range"))
    gpu_side = r.filter(pc.invert(r.column("nested")))
    n_gpu = sum(1 for e in doc["traceEvents"] if e.get("cat") == "gpu_user_annotation")
    assert gpu_side.num_rows == n_gpu
    assert gpu_side.column("device").null_count == 0
    cpu_side = r.filter(r.column("nested"))
    assert (
        cpu_side.column("tid").null_count == 0
        and cpu_side.column("device").null_count == cpu_side.num_rows
    )


def test_nn_module_frames_are_ranges_other_python_frames_dropped(cache: dict[str, Any]) -> None:
    raw, doc = get(cache, KINETO / "tracelens" / "sglang_Qwen3-8B_prefilldecode.json.gz")
    mods = [
        e["name"]
        for e in doc["traceEvents"]
        if e.get("cat") == "python_function" and e["name"].startswith("nn.Module: ")
    ]
    r = raw.table.filter(pc.equal(raw.table.column("domain"), "nn.Module"))
    assert sorted(r.column("name").to_pylist()) == sorted(mods)
    assert raw.table.num_rows < len(doc["traceEvents"]) / 5


# --- bad input ---------------------------------------------------------------------


def test_bad_inputs_fail_with_one_sentence(tmp_path: Path) -> None:
    good = KINETO / "hta" / "sampled_rank-0.json.gz"
    data = good.read_bytes()
    cases = {
        "missing.json": None,
        "truncated.json.gz": data[: len(data) // 2],
        "truncated.json": gzip.decompress(data)[:50_000],
        "other.json": b'{"name": "not a trace", "values": [1, 2]}',
        "array.json": b'[{"ph": "X", "ts": 1}]',
        "text.json": b"hello world",
        "empty.json": b"",
    }
    for name, content in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(TracekitError) as info:
            kineto.read(p)
        msg = str(info.value)
        assert msg.endswith(".") and "\n" not in msg and str(p) in msg, (name, msg)


# --- payload markers from nvtx_ranges (a real CPU torch.profiler trace) ---------------


def test_payload_marker_attaches_to_its_range(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import nvtx_ranges

    out = tmp_path / "cpu.pt.trace.json"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(3):
            with nvtx_ranges.phase("decode"), nvtx_ranges.step(batch_size=8 + i, tokens=1024):
                torch.ones(4) + 1
    prof.export_chrome_trace(str(out))
    doc = load_raw(out)
    markers = [
        e for e in doc["traceEvents"] if str(e.get("name", "")).startswith(kineto.PAYLOAD_PREFIX)
    ]
    assert len(markers) == 3  # the traced program emitted three
    raw = kineto.read(out)
    steps = raw.table.filter(pc.equal(raw.table.column("name"), "step")).sort_by("start_ns")
    assert [json.loads(p) for p in steps.column("payload").to_pylist()] == [
        {"batch_size": 8 + i, "tokens": 1024} for i in range(3)
    ]
    assert not any(
        n.startswith(kineto.PAYLOAD_PREFIX) for n in raw.table.column("name").to_pylist()
    )


# --- presets against the real names ---------------------------------------------------


def range_names(doc: dict[str, Any]) -> list[str]:
    return [
        e["name"]
        for e in doc["traceEvents"]
        if e.get("cat") in ("user_annotation", "gpu_user_annotation")
    ]


def test_vllm_preset_matches_real_step_names(cache: dict[str, Any]) -> None:
    pm = phasemap.load("vllm")
    _, ex = get(
        cache, KINETO / "tracelens" / "vllm_prefilldecode_piecewise" / "graph_execution.json.gz"
    )
    _, cap = get(
        cache,
        KINETO / "tracelens" / "vllm_prefilldecode_piecewise" / "graph_capture_rank_0.json.gz",
    )
    _, b200 = get(cache, KINETO / "tracelens" / "b200_eager_trace.json.gz")
    (execute,) = [n for n in range_names(ex) if n.startswith("execute_")]
    assert pm.phase_of(execute) == "mixed"  # context_9 ... generation_37
    eager = [n for n in range_names(b200) if n.startswith("execute_")]
    assert "prefill" in {pm.phase_of(n) for n in eager}  # execute_context_1(...)_generation_0(0)
    assert all(pm.phase_of(n) is not None for n in eager)
    assert pm.phase_of(
        "capture_8192_PIECEWISE"
    ) == "capture" and "capture_8192_PIECEWISE" in range_names(cap)
    decode = execute.replace("_context_9(", "_context_0(")
    assert pm.phase_of(decode) == "decode"
    assert all(pm.is_skip(n) for n in range_names(cap) if n.startswith("## Call CompiledFxGraph"))
    assert phasemap.choose("auto", range_names(ex)).name == "vllm"


def test_sglang_preset_matches_real_step_names(cache: dict[str, Any]) -> None:
    pm = phasemap.load("sglang")
    _, doc = get(cache, KINETO / "tracelens" / "sglang_Qwen3-8B_prefilldecode.json.gz")
    names = range_names(doc)
    (step,) = [n for n in names if n.startswith("step[")]
    assert pm.phase_of(step) == "prefill"  # step[EXTEND bs=15 toks=15360]
    assert pm.phase_of(step.replace("EXTEND", "DECODE")) == "decode"
    assert pm.phase_of(step.replace("EXTEND", "MIXED")) == "mixed"
    assert all(pm.is_skip(n) for n in names if n.startswith("execute_"))
    decoder = {
        e["name"]
        for e in doc["traceEvents"]
        if e.get("cat") == "python_function" and "DecoderLayer_" in e["name"]
    }
    assert decoder
    assert {pm.layer_of(n) for n in decoder} == {int(n.rsplit("_", 1)[1]) for n in decoder}


def test_trtllm_preset_matches_executor_ranges() -> None:
    # Names as TensorRT-LLM's PyExecutor formats them (nvtx_range f-strings).
    pm = phasemap.load("trtllm")
    assert pm.phase_of("[Executor] _forward_step 7: 4 ctx reqs, 0 gen reqs") == "prefill"
    assert pm.phase_of("[Executor] _forward_step 8: 0 ctx reqs, 4 gen reqs") == "decode"
    assert pm.phase_of("[Executor] _forward_step 9: 1 ctx reqs, 3 gen reqs") == "mixed"
    assert pm.phase_of("_forward_step: 2 ctx reqs, 0 gen reqs") == "prefill"
    assert pm.phase_of("[Executor] _prepare_and_schedule_batch") is None
