"""examples/tp_decoder.py on CPU (gloo) under torch.profiler: the Kineto trace holds
exactly the phase/step/layer/operator ranges and all_reduce calls the program says
it made (facts_rank<r>.json), counted from the raw JSON, not through tracekit."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tp_decoder.py"
SMALL = ["--layers", "2", "--hidden", "64", "--heads", "4", "--vocab", "97", "--batch", "2"]
SMALL += ["--prompt-len", "8", "--gen-len", "3", "--warmup", "1", "--profiler", "torch"]


def run_example(out: Path, nproc: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if nproc == 1:
        cmd = [sys.executable, str(EXAMPLE)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
        with socket.socket() as sock:  # torchrun's --master-port 0 hangs here
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd += ["--master-addr", "127.0.0.1", "--master-port", str(port), str(EXAMPLE)]
    cmd += [*SMALL, "--device", "cpu", "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, timeout=240)


def ranges_by_phase(trace: Path) -> dict[str, Counter[str]]:
    """Count user_annotation ranges by the phase:<name> range that encloses them."""
    doc = json.loads(gzip.decompress(Path(trace).read_bytes()))
    ev = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    phases = [e for e in ev if e.get("cat") == "user_annotation" and e["name"].startswith("phase:")]
    out: dict[str, Counter[str]] = {}
    for p in phases:
        lo, hi = p["ts"], p["ts"] + p["dur"]
        c = Counter(
            e["name"]
            for e in ev
            if e["tid"] == p["tid"] and lo <= e["ts"] and e["ts"] + e["dur"] <= hi + 1e-3
            if e.get("cat") == "user_annotation" or e["name"].startswith("tracekit.payload:")
        )
        out.setdefault(p["name"].removeprefix("phase:"), Counter()).update(c)
    return out


def check_rank(out: Path, rank: int, world: int) -> None:
    facts = json.loads((out / f"facts_rank{rank}.json").read_text())
    assert facts["world_size"] == world and facts["rank"] == rank
    got = ranges_by_phase(out / f"trace_rank{rank}.pt.trace.json.gz")
    assert set(got) == {"prefill", "decode"} == set(facts["phases"])
    layers = facts["config"]["layers"]
    for ph, f in facts["phases"].items():
        c = got[ph]
        steps = 1 if ph == "prefill" else facts["config"]["gen_len"]
        assert f["steps"] == steps == c["step"]
        assert f["phase_ranges"] == c[f"phase:{ph}"] == 1
        # torch's own gloo/nccl annotation is also a user_annotation: leave it out
        mine = {n: k for n, k in c.items() if ":" not in n or n.startswith("phase:")}
        assert mine == f["ranges"]
        assert c["all_reduce"] == f["all_reduce_calls"] == 2 * layers * steps
        assert f["all_reduce_executed"] == f["all_reduce_calls"]
        attn = "_context_attention_kernel" if ph == "prefill" else "_token_attention_kernel"
        assert c[attn] == layers * steps
        tokens = facts["step_payload"][ph]["tokens"]
        bs = facts["config"]["batch"]
        assert c[f"tracekit.payload:batch_size={bs},tokens={tokens}"] == steps
    assert facts["phases"]["prefill"]["ranges"].get("_token_attention_kernel") is None


def test_example_world1(tmp_path):
    run_example(tmp_path)
    check_rank(tmp_path, 0, 1)
    doc = json.loads(gzip.decompress(Path(tmp_path / "trace_rank0.pt.trace.json.gz").read_bytes()))
    assert doc["distributedInfo"]["world_size"] == 1


@pytest.mark.slow
def test_example_torchrun_world2(tmp_path):
    run_example(tmp_path, nproc=2)
    for r in (0, 1):
        check_rank(tmp_path, r, 2)


def test_example_cpu_trace_ingests_with_phases_steps_and_ops(tmp_path):
    """Annotate, profile, ingest: tracekit finds the program's phases, steps, operators
    and payloads in its own CPU trace (no GPU: CPU operators are attributed through
    their own thread)."""
    import duckdb

    from tracekit.ingest import ingest

    run_example(tmp_path / "trace")
    facts = json.loads((tmp_path / "trace" / "facts_rank0.json").read_text())
    out = tmp_path / "cpu.parquet"
    res = ingest([tmp_path / "trace" / "trace_rank0.pt.trace.json.gz"], out, jobs=1)
    assert res.metadata["phase_map"]["name"] == "tracekit"

    def q(sql):
        return duckdb.sql(sql.replace("RUN", f"'{out}'")).fetchall()

    for ph, f in facts["phases"].items():
        (steps,) = q(f"select count(distinct step) from RUN where kind = 'range' and name = 'step' and phase = '{ph}'")[0]
        assert steps == f["steps"]
        (calls,) = q(f"select count(*) from RUN where kind = 'range' and name = 'all_reduce' and phase = '{ph}'")[0]
        assert calls == f["all_reduce_calls"]
        payload = facts["step_payload"][ph]
        assert q(f"select distinct batch_size, tokens from RUN where kind = 'range' and name = 'step' and phase = '{ph}'") == [
            (payload["batch_size"], payload["tokens"])
        ]
        # CPU operators (aten::*) inside each annotated operator carry that op.
        ops = {r[0] for r in q(f"select distinct op from RUN where kind = 'cpu_op' and phase = '{ph}' and op is not null")}
        expected = {n for n in f["ranges"] if n.startswith("_")}
        assert expected <= ops | {"_embed"}, expected - ops
    assert not q("select 1 from RUN where name like 'tracekit.payload:%' limit 1")
