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
    if fmt == "torch":
        # Message size: the all_reduce'd activation is batch x tokens x hidden bf16
        # values, as the program was configured (Kineto records it on the kernel).
        cfg = known[0]["config"]
        want = {"prefill": cfg["batch"] * cfg["prompt_len"] * cfg["hidden"] * 2}
        if not cfg["cuda_graph"]:  # graph replays carry no collective args in Kineto
            want["decode"] = cfg["batch"] * 1 * cfg["hidden"] * 2
        got_bytes = dict(
            duckdb.sql(
                f"select phase, any_value(bytes) from '{out}' where collective = 'AllReduce' "
                "and phase in ('prefill', 'decode') group by phase having count(distinct bytes) = 1"
            ).fetchall()
        )
        assert got_bytes == want
        by_phase = comm_table([out], by="phase").set_index("phase")
        assert (by_phase.loc[list(want), "busbw_gbps"] > 0).all()
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


def _phase_oracle(sqlite_gz: Path, tmp: Path) -> dict[str, float]:
    """GPU time per (rank, step) per phase straight from the Nsight export: activity ->
    runtime call (correlation, process) -> the `phase:<p>` push/pop range open on the
    launching thread; steps = `step` ranges inside a phase range, over all processes."""
    import gzip
    import shutil
    import sqlite3

    import pandas as pd

    db = tmp / (sqlite_gz.name + ".sqlite")
    with gzip.open(sqlite_gz) as src, db.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    con = sqlite3.connect(db)
    frames = {
        # compare's "kernel time" is GPU activity time: kernels, memcpy and memset.
        "k": " union all ".join(
            f"select start, end, correlationId as c, globalPid >> 24 as gp from CUPTI_ACTIVITY_KIND_{t}"
            for t in ("KERNEL", "MEMCPY", "MEMSET")
        ),
        "r": "select start as rs, correlationId as c, globalTid as gt, globalTid >> 24 as gp from CUPTI_ACTIVITY_KIND_RUNTIME",
        "n": "select e.start as s, e.end as e, e.globalTid as gt, s.value as txt from NVTX_EVENTS e "
        "join StringIds s on s.id = e.textId where e.eventType = 59",
    }
    ddb = duckdb.connect()
    for name, sql in frames.items():
        ddb.register(name, pd.read_sql_query(sql, con))
    con.close()
    kernel = dict(
        ddb.sql(
            """select substr(n.txt, 7) as phase, sum(k."end" - k.start)
               from k join r on k.c = r.c and k.gp = r.gp
               join n on n.gt = r.gt and n.s <= r.rs and r.rs < n.e and n.txt like 'phase:%'
               group by 1"""
        ).fetchall()
    )
    steps = dict(
        ddb.sql(
            """select substr(p.txt, 7), count(*) from n as st join n as p
               on st.gt = p.gt and p.s <= st.s and st.e <= p.e and p.txt like 'phase:%'
               where st.txt = 'step' group by 1"""
        ).fetchall()
    )
    return {ph: kernel[ph] / steps[ph] for ph in steps if ph in kernel}


@pytest.mark.parametrize(
    ("a", "b", "predicted_decode"),
    [
        # TP=1, H100 SXM vs H200: decode is memory-bound, so the table predicts the ratio
        # of memory bandwidths, by hand from the datasheets: 3350 / 4800 GB/s.
        ("h100_tp1", "h200_tp1", 3350.0 / 4800.0),
        ("h200_tp2", "h200_tp4", None),
    ],
)
def test_compare_examples_against_raw_sql(a: str, b: str, predicted_decode: float | None, tmp_path: Path) -> None:
    from tracekit.compare import compare

    pa_, pb_ = tmp_path / "a.parquet", tmp_path / "b.parquet"
    ingest([TRACES / a / "nsys"], pa_, jobs=1)
    ingest([TRACES / b / "nsys"], pb_, jobs=1)
    res = compare([pa_], [pb_])
    rows = res.rows[res.rows["level"] == "phase"].set_index("phase")
    oa = _phase_oracle(TRACES / a / "nsys" / f"{a}.sqlite.gz", tmp_path)
    ob = _phase_oracle(TRACES / b / "nsys" / f"{b}.sqlite.gz", tmp_path)
    for phase in ("prefill", "decode"):
        assert rows.loc[phase, "kernel_a"] == pytest.approx(oa[phase], rel=1e-9)
        assert rows.loc[phase, "kernel_b"] == pytest.approx(ob[phase], rel=1e-9)
        assert rows.loc[phase, "ratio"] == pytest.approx(ob[phase] / oa[phase], rel=1e-9)
    if predicted_decode is not None:
        assert rows.loc["decode", "predicted"] == pytest.approx(predicted_decode, rel=1e-6)


@pytest.mark.parametrize("name", ["h200_tp1", "h200_tp2", "h200_tp4"])
def test_graph_replay_ops_come_from_the_capture(name: str, tmp_path: Path) -> None:
    """Replayed kernels take the operator open when their node was captured (nsys
    graph node ids): per operator, the decode kernels of the CUDA-graph run equal
    those of the same program run eagerly."""
    eager, graph = tmp_path / "e.parquet", tmp_path / "g.parquet"
    ingest([TRACES / name / "nsys"], eager, jobs=1)
    ingest([TRACES / f"{name}_graph" / "nsys"], graph, jobs=1)
    sql = "select coalesce(op, '(none)'), count(*) from '{}' where kind = 'kernel' and phase = 'decode' group by 1"
    e = dict(duckdb.sql(sql.format(eager)).fetchall())
    g = dict(duckdb.sql(sql.format(graph)).fetchall())
    assert g == e
    assert e.get("(none)", 0) < 0.1 * sum(e.values())
