"""The project's own GPU traces (examples/traces: TP=1/2/4 prefill/decode loops on
H100 and H200, eager and CUDA-graph decode, each under Nsight Systems and
torch.profiler) ingest with >= 99% of GPU kernel time attributed to a phase, and the
NCCL all_reduce kernels per rank and phase, the steps per phase and the step payloads
equal what the traced program itself recorded (facts_rank<r>.json)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tracekit.ingest import ingest

TRACES = Path(__file__).resolve().parents[1] / "examples" / "traces"
CASES = sorted(
    (d.name, fmt) for d in TRACES.iterdir() if d.is_dir() for fmt in ("nsys", "torch") if (d / fmt).is_dir()
)


def facts(folder: Path) -> dict[int, dict]:
    out = {}
    for f in sorted(folder.glob("facts_rank*.json")):
        d = json.loads(f.read_text())
        out[int(d["rank"])] = d
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_example_trace_matches_program_facts(case: tuple[str, str], tmp_path: Path) -> None:
    name, fmt = case
    known = facts(TRACES / name / fmt)
    out = tmp_path / "run.parquet"
    ingest([TRACES / name / fmt], out, run=f"{name}_{fmt}", jobs=1)
    q = lambda sql: duckdb.sql(sql.replace("RUN", f"'{out}'")).fetchall()  # noqa: E731

    # Ranks: one per process of the run.
    assert sorted(r for (r,) in q("select distinct rank from RUN where kind = 'kernel'")) == sorted(known)

    # Coverage: share of GPU kernel time with a phase.  The one capture whose warm-up
    # ran outside any phase range (facts phase 'none') is held to what the program did.
    phased, total = q("select sum(dur_ns) filter (where phase is not null), sum(dur_ns) from RUN where kind = 'kernel'")[0]
    outside = any("none" in d["phases"] for d in known.values())
    assert phased / total >= (0.9 if outside else 0.99)

    world = len(known)
    got = {
        (r, p): n
        for r, p, n in q(
            "select rank, phase, count(*) from RUN where kind = 'kernel' and collective = 'AllReduce' group by all"
        )
    }
    for rank, d in known.items():
        for phase, pf in d["phases"].items():
            key = (rank, None if phase == "none" else phase)
            # NCCL launches no kernel for a communicator of one rank.
            want = pf["all_reduce_executed"] if world > 1 else 0
            assert got.get(key, 0) == want, (rank, phase)
            if pf["steps"]:
                (steps,) = q(
                    f"select count(distinct step) from RUN where kind = 'kernel' and rank = {rank} and phase = '{phase}'"
                )[0]
                assert steps == pf["steps"], (rank, phase)
        for phase, payload in d.get("step_payload", {}).items():
            rows = q(
                f"select distinct batch_size, tokens from RUN where kind = 'kernel' and rank = {rank} and phase = '{phase}'"
            )
            assert rows == [(payload["batch_size"], payload["tokens"])], (rank, phase)


def test_graph_replays_take_the_step_of_their_launch(tmp_path: Path) -> None:
    """In CUDA-graph decode every replayed kernel is attributed through its
    cudaGraphLaunch: 16 decode steps, each with the same kernel count."""
    out = tmp_path / "g.parquet"
    ingest([TRACES / "h200_tp2_graph" / "nsys"], out, jobs=1)
    rows = duckdb.sql(
        f"select rank, step, count(*) as n, count(*) filter (where collective = 'AllReduce') as ar "
        f"from '{out}' where kind = 'kernel' and phase = 'decode' group by all order by all"
    ).fetchall()
    assert len(rows) == 2 * 16
    assert {r[3] for r in rows} == {8}  # 4 layers x 2 all_reduce per replay
    assert len({r[2] for r in rows}) == 1
    launches = duckdb.sql(
        f"select count(*) from '{out}' where kind = 'runtime' and name like 'cudaGraphLaunch%' and phase = 'decode'"
    ).fetchall()[0][0]
    assert launches == 2 * 16


@pytest.mark.parametrize(
    "case", [c for c in CASES if c[0] in ("h200_tp2", "h200_tp4", "h200_tp2_graph")], ids=lambda c: f"{c[0]}-{c[1]}"
)
def test_comm_on_multi_rank_examples(case: tuple[str, str], tmp_path: Path) -> None:
    """Collectives per rank and phase as the program issued them; transfer (minimum
    over ranks) <= each rank's duration; transfer + wait = duration."""
    from tracekit.comm import comm_table

    name, fmt = case
    known = facts(TRACES / name / fmt)
    out = tmp_path / "run.parquet"
    ingest([TRACES / name / fmt], out, jobs=1)
    per_rank = comm_table([out], by="rank")
    for rank, d in known.items():
        for phase, pf in d["phases"].items():
            row = per_rank[(per_rank["rank"] == rank) & (per_rank["phase"] == phase)]
            n = int(row["kernels"].sum()) if len(row) else 0
            assert n == pf["all_reduce_executed"], (rank, phase)
    assert (per_rank["unmatched_kernels"] == 0).all()
    assert (per_rank["transfer_ms"] <= per_rank["total_ms"] + 1e-3).all()
    assert ((per_rank["transfer_ms"] + per_rank["wait_ms"] - per_rank["total_ms"]).abs() <= 2e-3).all()
    # Per collective: the transfer is the shortest of the ranks' durations, measured
    # here straight from the kernels (k-th AllReduce kernel of each rank).
    raw = duckdb.sql(
        f"""select seq, min(dur_ns) / 1e3 as min_us from (
              select dur_ns, row_number() over (partition by rank order by start_ns) - 1 as seq
              from '{out}' where kind = 'kernel' and collective = 'AllReduce') group by seq order by seq"""
    ).df()
    coll = comm_table([out], by="collective").sort_values("seq")
    assert len(coll) == len(raw)
    assert (coll["transfer_us"].to_numpy() - raw["min_us"].to_numpy()).__abs__().max() <= 0.01
