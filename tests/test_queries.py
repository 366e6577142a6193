"""The SQL library on real traces of both formats.

Every shipped query runs on every run, returns exactly its documented columns, and
runs unchanged in a bare DuckDB connection.  Headline numbers (kernel time, busy
time, steps and wall time per phase, communication share, operator shares) are
checked against an independent oracle computed from the SOURCE trace file:

- Nsight Systems: plain SQL on the .sqlite export (kernel/memcpy/memset ->
  runtime call by (pid, correlationId) -> NVTX push/pop ranges on the launching
  thread open at the launch instant), joined in DuckDB over the raw tables;
- Kineto: the JSON events themselves (kernel -> cuda_runtime by correlation ->
  user_annotation ranges on the launching thread), joined in DuckDB.

Busy time is merged with NumPy, not SQL.  Nothing here goes through tracekit's
readers or attribution except the run under test.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from oracle import union_length as _union

from tracekit.errors import TracekitError
from tracekit.ingest import ingest
from tracekit.shell import add_query_views, init_sql, repl
from tracekit.sql import (
    connect,
    format_table,
    list_queries,
    load_query,
    parse_query,
    run_query,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"
MFU = SHARED / "nsys" / "mfu_2gpu_before.sqlite"
H100 = SHARED / "nsys" / "h100_2gpu_1s.sqlite"
HTA = SHARED / "kineto" / "hta" / "nccl_data.json.gz"

# Phase maps for traces that were not recorded with phase ranges: real ranges of the
# trace stand in for phases, so phase attribution is exercised on real data.
MFU_PHASES = r"""
name = "mfu-test"
[[phase]]
pattern = '^(?P<phase>FlashAttnFunc|AllToAll4D)\b'
"""
MFU_PHASE_RE = r"^(FlashAttnFunc|AllToAll4D)\b"
HTA_PHASES = r"""
name = "hta-test"
step = ['^ProfilerStep#\d+$']
[[phase]]
pattern = '^## (?P<phase>forward|backward|optimizer) ##$'
"""
HTA_PHASE_RE = r"^## (forward|backward|optimizer) ##$"
HTA_STEP_RE = r"^ProfilerStep#\d+$"

GPU_KINDS = ("kernel", "memcpy", "memset")
EXAMPLES = ROOT / "examples" / "traces"
TOL_MS = 2e-3  # results are rounded to 1 µs; Kineto's µs floats to ns add < 1 ns each


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Ingest each source trace once: {case: run.parquet}."""
    d = tmp_path_factory.mktemp("runs")
    out: dict[str, Path] = {}
    for case, src, pm_text in (
        ("mfu", MFU, MFU_PHASES),
        ("h100", H100, None),
        ("hta", HTA, HTA_PHASES),
        ("tp2_nsys", EXAMPLES / "h200_tp2" / "nsys", None),
        ("tp2_torch", EXAMPLES / "h200_tp2" / "torch", None),
    ):
        if not src.exists():
            continue
        phase_map = "auto"
        if pm_text is not None:
            pm = d / f"{case}.toml"
            pm.write_text(pm_text)
            phase_map = str(pm)
        ingest([src], d / f"{case}.parquet", phase_map=phase_map, jobs=1)
        out[case] = d / f"{case}.parquet"
    if not out:
        pytest.skip("shared traces absent")
    return out


def run_of(runs: dict[str, Path], case: str) -> Path:
    if case not in runs:
        pytest.skip(f"trace for {case} not present")
    return runs[case]


# --------------------------------------------------------------------------- oracles


def _sqlite(path: Path, sql: str) -> pd.DataFrame:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return pd.read_sql_query(sql, con)
    finally:
        con.close()


def nsys_oracle(path: Path, phase_re: str) -> pd.DataFrame:
    """One row per GPU activity of an Nsight SQLite export: kind, pid, device, start,
    end, kernel name, and the phase/op/phase-range instance from a range join."""
    acts = _sqlite(
        path,
        """
        select 'kernel' as kind, k.start, k."end", k.deviceId as device,
               k.correlationId as corr, k.globalPid >> 24 as gp, s.value as kname
        from CUPTI_ACTIVITY_KIND_KERNEL k join StringIds s on s.id = k.shortName
        union all
        select 'memcpy', start, "end", deviceId, correlationId, globalPid >> 24, null
        from CUPTI_ACTIVITY_KIND_MEMCPY
        union all
        select 'memset', start, "end", deviceId, correlationId, globalPid >> 24, null
        from CUPTI_ACTIVITY_KIND_MEMSET
        """,
    )
    runtime = _sqlite(
        path,
        "select start as rs, correlationId as corr, globalTid as gt, globalTid >> 24 as gp "
        "from CUPTI_ACTIVITY_KIND_RUNTIME where correlationId is not null",
    )
    ranges = _sqlite(
        path,
        'select e.start as s, e."end" as e, e.globalTid as gt, coalesce(e.text, t.value) as txt '
        "from NVTX_EVENTS e left join StringIds t on t.id = e.textId "
        'where e.eventType = 59 and e."end" > e.start',
    )
    acts["aid"] = np.arange(len(acts))
    return _attribute_oracle(acts, runtime, ranges, phase_re, step_re=None)


def kineto_oracle(path: Path, phase_re: str, step_re: str) -> pd.DataFrame:
    """The same table from a Kineto JSON trace (µs floats -> ns)."""
    with gzip.open(path, "rt") as fh:
        events = pd.json_normalize(json.load(fh)["traceEvents"])
    ev = events[events["ph"] == "X"]
    cat = ev["cat"].fillna("")
    kind = cat.map({"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"})
    g = ev[kind.notna()]
    acts = pd.DataFrame(
        {
            "kind": kind[kind.notna()].to_numpy(),
            "start": np.round(g["ts"].to_numpy() * 1000).astype(np.int64),
            "end": np.round((g["ts"] + g["dur"]).to_numpy() * 1000).astype(np.int64),
            "device": g["args.device"].astype("int64").to_numpy(),
            "corr": g["args.correlation"].astype("int64").to_numpy(),
            "gp": 0,
            "kname": np.where(g["cat"] == "kernel", g["name"], None),
        }
    )
    rt = ev[cat == "cuda_runtime"]
    runtime = pd.DataFrame(
        {
            "rs": np.round(rt["ts"].to_numpy() * 1000).astype(np.int64),
            "corr": rt["args.correlation"].astype("int64").to_numpy(),
            "gt": rt["tid"].astype(str).to_numpy(),
            "gp": 0,
        }
    )
    ua = ev[cat == "user_annotation"]
    ranges = pd.DataFrame(
        {
            "s": np.round(ua["ts"].to_numpy() * 1000).astype(np.int64),
            "e": np.round((ua["ts"] + ua["dur"]).to_numpy() * 1000).astype(np.int64),
            "gt": ua["tid"].astype(str).to_numpy(),
            "txt": ua["name"].to_numpy(),
        }
    )
    acts["aid"] = np.arange(len(acts))
    return _attribute_oracle(acts, runtime, ranges, phase_re, step_re)


def _attribute_oracle(
    acts: pd.DataFrame,
    runtime: pd.DataFrame,
    ranges: pd.DataFrame,
    phase_re: str,
    step_re: str | None,
) -> pd.DataFrame:
    """Range join: the innermost phase range open at the launch, and the innermost
    other (non-phase, non-step) range open at the launch and inside that phase."""
    con = duckdb.connect()
    con.register("a", acts)
    con.register("r", runtime)
    con.register("n", ranges)
    con.execute("SET VARIABLE phase_re = $p", {"p": phase_re})
    con.execute("SET VARIABLE step_re = $s", {"s": step_re or "^$never^"})
    return con.sql(
        """
        with rt as (
            select gp, corr, min(rs) as rs, arg_min(gt, rs) as gt from r group by gp, corr
        ),
        launch as (
            select a.aid, rt.rs, rt.gt from a join rt on a.gp = rt.gp and a.corr = rt.corr
        ),
        open as (
            select l.aid, n.s, n.e, n.txt,
                   regexp_matches(n.txt, getvariable('phase_re')) as is_phase,
                   regexp_matches(n.txt, getvariable('step_re')) as is_step
            from launch l join n on n.gt = l.gt and n.s <= l.rs and l.rs < n.e
        ),
        ph as (
            select aid, arg_max(txt, s) as phase_txt, max(s) as phase_s
            from open where is_phase group by aid
        ),
        op as (
            select o.aid, arg_max(o.txt, o.s) as op_txt
            from open o left join ph using (aid)
            where not o.is_phase and not o.is_step and (ph.phase_s is null or o.s >= ph.phase_s)
            group by o.aid
        )
        select a.*, regexp_extract(ph.phase_txt, getvariable('phase_re'), 1) as phase,
               ph.phase_s, split_part(op.op_txt, ',', 1) as op
        from a left join ph using (aid) left join op using (aid)
        """
    ).df()


def busy_ms(df: pd.DataFrame) -> float:
    """Length of the union of [start, end) intervals, per device, summed (NumPy)."""
    total = 0
    for _, g in df.groupby("device"):
        order = np.argsort(g["start"].to_numpy(), kind="stable")
        s = g["start"].to_numpy()[order]
        e = g["end"].to_numpy()[order]
        reach = np.maximum.accumulate(e)
        new = np.ones(len(s), bool)
        new[1:] = s[1:] > reach[:-1]
        island = np.cumsum(new)
        first = np.flatnonzero(new)
        last_reach = np.maximum.reduceat(e, first)
        total += int((last_reach - s[first]).sum())
        assert island[-1] == len(first)
    return total / 1e6


@pytest.fixture(scope="session")
def mfu_oracle() -> pd.DataFrame:
    return nsys_oracle(need(MFU), MFU_PHASE_RE)


@pytest.fixture(scope="session")
def hta_oracle() -> pd.DataFrame:
    return kineto_oracle(need(HTA), HTA_PHASE_RE, HTA_STEP_RE)


def oracle_ranges_nsys(path: Path, phase_re: str) -> pd.DataFrame:
    """Phase ranges of an Nsight export: (gp, phase, wall_ns)."""
    df = _sqlite(
        path,
        'select e.start as s, e."end" as e, e.globalTid >> 24 as gp, '
        "coalesce(e.text, t.value) as txt from NVTX_EVENTS e left join StringIds t "
        'on t.id = e.textId where e.eventType = 59 and e."end" > e.start',
    )
    df["phase"] = df["txt"].str.extract(phase_re, expand=False)
    df = df[df["phase"].notna()]
    return df.assign(wall_ns=df["e"] - df["s"])


# --------------------------------------------------------------------------- every query


def test_list_queries_covers_every_shipped_file() -> None:
    names = [q.name for q in list_queries()]
    files = sorted(p.stem for p in (ROOT / "queries").glob("*.sql"))
    assert names == files
    assert {
        "phase_breakdown",
        "op_share",
        "category_share",
        "top_kernels",
        "step_series",
        "batch_size",
        "coverage",
    } <= set(names)
    for q in list_queries():
        assert q.description and q.columns, q.name


@pytest.mark.parametrize("case", ["mfu", "h100", "hta", "tp2_nsys", "tp2_torch"])
def test_every_query_runs_and_matches_its_column_docs(runs: dict[str, Path], case: str) -> None:
    run = run_of(runs, case)
    for q in list_queries():
        df = run_query(q.name, [run])
        assert list(df.columns) == list(q.columns), q.name
        if q.name in ("phase_breakdown", "op_share", "category_share", "top_kernels", "coverage"):
            assert len(df) > 0, q.name
        if case.startswith("tp2"):  # an instrumented LLM loop: every query has rows
            assert len(df) > 0, q.name


@pytest.mark.parametrize("case", ["tp2_nsys", "tp2_torch"])
def test_llm_example_phase_breakdown_matches_program_facts(runs: dict[str, Path], case: str) -> None:
    """Steps per rank and phase, and the step payload, as the traced program recorded."""
    run = run_of(runs, case)
    folder = EXAMPLES / "h200_tp2" / case.removeprefix("tp2_")
    df = run_query("phase_breakdown", [run])
    bs = run_query("batch_size", [run])
    for f in sorted(folder.glob("facts_rank*.json")):
        facts = json.loads(f.read_text())
        for phase, pf in facts["phases"].items():
            row = df[(df["rank"] == facts["rank"]) & (df["phase"] == phase)]
            assert int(row["steps"].iloc[0]) == pf["steps"], (f.name, phase)
    assert set(bs["phase"]) == {"prefill", "decode"}


@pytest.mark.parametrize("case", ["mfu", "hta"])
def test_every_query_runs_unchanged_in_a_bare_duckdb(runs: dict[str, Path], case: str) -> None:
    """What docs/sql.md tells users: create the view, paste the file."""
    run = run_of(runs, case)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW events AS SELECT * FROM '{run}'")
    for q in list_queries():
        text = (ROOT / "queries" / f"{q.name}.sql").read_text()
        bare = con.sql(text).df()
        ours = run_query(q.name, [run])  # header defaults bound as variables
        pd.testing.assert_frame_equal(bare, ours, check_dtype=False, obj=q.name)


def test_several_runs_in_one_view(runs: dict[str, Path]) -> None:
    both = [run_of(runs, "mfu"), run_of(runs, "hta")]
    df = run_query("coverage", both)
    assert sorted(df["run"].unique()) == ["mfu_2gpu_before", "nccl_data"]


# --------------------------------------------------------------------------- headline numbers


def test_phase_breakdown_nsys_matches_sqlite_oracle(
    runs: dict[str, Path], mfu_oracle: pd.DataFrame
) -> None:
    got = run_query("phase_breakdown", [run_of(runs, "mfu")])
    o = mfu_oracle.assign(phase=mfu_oracle["phase"].fillna("(no phase)"))
    walls = oracle_ranges_nsys(MFU, MFU_PHASE_RE)
    assert set(got["phase"]) == set(o["phase"]) == {"FlashAttnFunc", "AllToAll4D", "(no phase)"}
    for phase, g in got.groupby("phase"):
        og = o[o["phase"] == phase]
        k = og[og["kind"] == "kernel"]
        kernel_ms = sorted(k.groupby("gp")["end"].sum().sub(k.groupby("gp")["start"].sum()) / 1e6)
        assert sorted(g["kernel_ms"]) == pytest.approx(kernel_ms, abs=TOL_MS)
        comm = k[k["kname"].str.startswith("nccl")]
        assert g["comm_ms"].sum() == pytest.approx(
            (comm["end"] - comm["start"]).sum() / 1e6, abs=TOL_MS
        )
        busy = sorted(busy_ms(gg) for _, gg in og.groupby("gp"))
        assert sorted(g["gpu_busy_ms"]) == pytest.approx(busy, abs=TOL_MS)
        if phase == "(no phase)":
            assert (g["steps"] == 0).all()
            continue
        w = walls[walls["phase"] == phase]
        assert sorted(g["steps"]) == sorted(w.groupby("gp").size())
        mean = sorted(w.groupby("gp")["wall_ns"].mean() / 1e6)
        assert sorted(g["wall_ms_mean"]) == pytest.approx(mean, abs=TOL_MS)
        p90 = sorted(w.groupby("gp")["wall_ns"].quantile(0.9) / 1e6)
        assert sorted(g["wall_ms_p90"]) == pytest.approx(p90, abs=TOL_MS)
    # Real NCCL traffic sits inside AllToAll4D: its communication share is large.
    a2a = got[got["phase"] == "AllToAll4D"]
    assert (a2a["comm_pct"] > 20).all()
    pct = 100 * a2a["comm_ms"] / a2a["kernel_ms"]
    assert a2a["comm_pct"].to_numpy() == pytest.approx(pct.to_numpy(), abs=0.01)


def test_phase_breakdown_kineto_matches_json_oracle(
    runs: dict[str, Path], hta_oracle: pd.DataFrame
) -> None:
    got = run_query("phase_breakdown", [run_of(runs, "hta")]).set_index("phase")
    o = hta_oracle.assign(phase=hta_oracle["phase"].fillna("(no phase)"))
    assert set(got.index) == set(o["phase"])
    with gzip.open(HTA, "rt") as fh:
        ev = pd.json_normalize(json.load(fh)["traceEvents"])
    ua = ev[(ev["cat"] == "user_annotation") & ev["name"].str.match(HTA_PHASE_RE)]
    for phase, og in o.groupby("phase"):
        k = og[og["kind"] == "kernel"]
        row = got.loc[phase]
        assert row["kernel_ms"] == pytest.approx((k["end"] - k["start"]).sum() / 1e6, abs=TOL_MS)
        comm = k[k["kname"].str.startswith("nccl")]
        assert row["comm_ms"] == pytest.approx(
            (comm["end"] - comm["start"]).sum() / 1e6, abs=TOL_MS
        )
        assert row["gpu_busy_ms"] == pytest.approx(busy_ms(og), abs=TOL_MS)
        if phase != "(no phase)":
            w = ua[ua["name"] == f"## {phase} ##"]["dur"] / 1e3
            assert row["steps"] == len(w) == 3
            assert row["wall_ms_mean"] == pytest.approx(w.mean(), abs=TOL_MS)
            assert row["kernels_per_step"] == pytest.approx(len(k) / 3, abs=0.05)


def _op_oracle(o: pd.DataFrame) -> pd.DataFrame:
    k = o[o["kind"] == "kernel"]
    k = k.assign(
        phase=k["phase"].fillna("(no phase)"),
        op=k["op"].fillna("(no op)"),
        dur=k["end"] - k["start"],
    )
    return (
        k.groupby(["phase", "op"], as_index=False)
        .agg(kernels=("dur", "size"), kernel_ms=("dur", "sum"))
        .assign(kernel_ms=lambda d: d["kernel_ms"] / 1e6)
    )


@pytest.mark.parametrize("case", ["mfu", "hta"])
def test_op_share_matches_oracle_and_sums_to_100(
    runs: dict[str, Path], case: str, request: pytest.FixtureRequest
) -> None:
    o = request.getfixturevalue(f"{case}_oracle")
    got = run_query("op_share", [run_of(runs, case)])
    want = _op_oracle(o)
    merged = got.merge(want, on=["phase", "op"], how="outer", suffixes=("", "_oracle"))
    assert merged["kernels"].notna().all() and merged["kernels_oracle"].notna().all(), merged
    assert (merged["kernels"] == merged["kernels_oracle"]).all()
    assert merged["kernel_ms"].to_numpy() == pytest.approx(
        merged["kernel_ms_oracle"].to_numpy(), abs=TOL_MS
    )
    for _, g in got.groupby("phase"):
        assert g["share_pct"].sum() == pytest.approx(100, abs=0.01 * len(g))


def test_category_share_sums_to_100_and_to_gpu_time(
    runs: dict[str, Path], hta_oracle: pd.DataFrame
) -> None:
    got = run_query("category_share", [run_of(runs, "hta")])
    o = hta_oracle.assign(phase=hta_oracle["phase"].fillna("(no phase)"))
    for phase, g in got.groupby("phase"):
        assert g["share_pct"].sum() == pytest.approx(100, abs=0.01 * len(g))
        og = o[o["phase"] == phase]
        assert g["gpu_ms"].sum() == pytest.approx((og["end"] - og["start"]).sum() / 1e6, abs=TOL_MS)
        assert g["activities"].sum() == len(og)
    comm = got[got["category"] == "communication"]["gpu_ms"].sum()
    ok = o[(o["kind"] == "kernel") & o["kname"].str.startswith("nccl")]
    assert comm == pytest.approx((ok["end"] - ok["start"]).sum() / 1e6, abs=TOL_MS)


def test_top_kernels_respects_top_n_and_orders_by_time(
    runs: dict[str, Path], mfu_oracle: pd.DataFrame
) -> None:
    run = run_of(runs, "mfu")
    got = run_query("top_kernels", [run], {"top_n": "3"})
    assert (got.groupby("phase").size() <= 3).all()
    assert (got["rank_in_phase"] <= 3).all()
    default = run_query("top_kernels", [run])
    assert (default.groupby("phase").size() == 10).any()
    # The first kernel of a phase is the oracle's largest short name in that phase.
    k = mfu_oracle[mfu_oracle["kind"] == "kernel"]
    k = k.assign(phase=k["phase"].fillna("(no phase)"), dur=k["end"] - k["start"])
    for phase, g in got.groupby("phase"):
        top = k[k["phase"] == phase].groupby("kname")["dur"].sum()
        first = g.sort_values("rank_in_phase").iloc[0]
        assert first["kernel"] == top.idxmax()
        assert first["kernel_ms"] == pytest.approx(top.max() / 1e6, abs=TOL_MS)
        assert list(g["kernel_ms"]) == sorted(g["kernel_ms"], reverse=True)


def test_step_series_kineto(runs: dict[str, Path], hta_oracle: pd.DataFrame) -> None:
    got = run_query("step_series", [run_of(runs, "hta")])
    assert len(got) == 9  # 3 ProfilerSteps x forward/backward/optimizer
    assert sorted(got["step"].unique()) == [0, 1, 2]
    assert list(got["start_s"]) == sorted(got["start_s"])
    o = hta_oracle[hta_oracle["phase"].notna()]
    for phase, og in o.groupby("phase"):
        # phase range instances in time order = steps 0, 1, 2
        spans = og.groupby("phase_s").agg(s=("start", "min"), e=("end", "max")).sort_index()
        kern = og[og["kind"] == "kernel"].assign(d=lambda d: d["end"] - d["start"])
        kms = kern.groupby("phase_s")["d"].sum().sort_index() / 1e6
        g = got[got["phase"] == phase].sort_values("step")
        assert g["gpu_span_ms"].to_numpy() == pytest.approx(
            ((spans["e"] - spans["s"]) / 1e6).to_numpy(), abs=TOL_MS
        )
        assert g["kernel_ms"].to_numpy() == pytest.approx(kms.to_numpy(), abs=TOL_MS)
        busy = [busy_ms(gg) for _, gg in og.groupby("phase_s")]
        assert g["gpu_busy_ms"].to_numpy() == pytest.approx(busy, abs=TOL_MS)
        assert (g["gpu_busy_ms"] <= g["gpu_span_ms"] + TOL_MS).all()


def test_coverage_matches_oracle(runs: dict[str, Path], mfu_oracle: pd.DataFrame) -> None:
    got = run_query("coverage", [run_of(runs, "mfu")])
    o = mfu_oracle.assign(d=mfu_oracle["end"] - mfu_oracle["start"])
    want = sorted(100 * o[o["phase"].notna()].groupby("gp")["d"].sum() / o.groupby("gp")["d"].sum())
    assert sorted(got["with_phase_pct"]) == pytest.approx(want, abs=0.01)
    assert sorted(got["activities"]) == sorted(o.groupby("gp").size())


def test_h100_without_phases_reports_everything_unphased(runs: dict[str, Path]) -> None:
    run = run_of(runs, "h100")
    got = run_query("phase_breakdown", [run])
    assert list(got["phase"].unique()) == ["(no phase)"]
    k = _sqlite(
        H100,
        'select globalPid >> 24 as gp, sum("end" - start) / 1e6 as ms '
        "from CUPTI_ACTIVITY_KIND_KERNEL group by gp",
    )
    assert sorted(got["kernel_ms"]) == pytest.approx(sorted(k["ms"]), abs=TOL_MS)
    assert run_query("step_series", [run]).empty


# --------------------------------------------------------------------------- errors


def test_unknown_query_suggests_near_names() -> None:
    with pytest.raises(
        TracekitError, match=r"no query named 'top_kernel'; did you mean top_kernels\?"
    ):
        load_query("top_kernel")


def test_query_file_by_path_and_missing_parameter(tmp_path: Path, runs: dict[str, Path]) -> None:
    f = tmp_path / "kernels_of.sql"
    f.write_text(
        "-- name: kernels_of\n"
        "-- description: Kernel count of one kind.\n"
        "-- param: kind VARCHAR required kind of event\n"
        "-- column: n  events (count)\n"
        "SELECT count(*) AS n FROM events WHERE kind = getvariable('kind');\n"
    )
    run = run_of(runs, "mfu")
    with pytest.raises(TracekitError, match=r"needs the parameter 'kind'"):
        run_query(str(f), [run])
    n = run_query(str(f), [run], {"kind": "kernel"})["n"].iloc[0]
    assert n == _sqlite(MFU, "select count(*) as n from CUPTI_ACTIVITY_KIND_KERNEL")["n"].iloc[0]
    # Values are bound, never spliced into the SQL: a quote is just a character.
    assert run_query(str(f), [run], {"kind": "x' OR '1'='1"})["n"].iloc[0] == 0
    with pytest.raises(TracekitError, match=r"has no parameter 'knd'"):
        run_query(str(f), [run], {"knd": "kernel"})


def test_bad_parameter_type(runs: dict[str, Path]) -> None:
    with pytest.raises(TracekitError, match=r"must be INTEGER, not 'five'"):
        run_query("top_kernels", [run_of(runs, "mfu")], {"top_n": "five"})


def test_not_a_tracekit_run(tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1]}), plain)
    with pytest.raises(TracekitError, match=r"not a tracekit run") as exc:
        run_query("coverage", [plain])
    assert "\n" not in str(exc.value)
    text = tmp_path / "notes.parquet"
    text.write_text("hello")
    with pytest.raises(TracekitError, match=r"is not a Parquet file"):
        run_query("coverage", [text])
    with pytest.raises(TracekitError, match=r"does not exist"):
        run_query("coverage", [tmp_path / "missing.parquet"])


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("-- description: x\nSELECT 1", 1, "no '-- name:' line"),
        ("-- name: a\n-- descr: x\nSELECT 1", 2, "unknown header key 'descr'"),
        (
            "-- name: a\n-- description: x\n-- param: n FLOAT 1 x\nSELECT getvariable('n')",
            3,
            "type 'FLOAT'",
        ),
        (
            "-- name: a\n-- description: x\n-- param: limit INTEGER 1 x\nSELECT getvariable('limit')",
            3,
            "reserved word",
        ),
        ("-- name: a\n-- description: x\n-- param: n INTEGER 1 x\nSELECT 1", 3, "never read"),
        (
            "-- name: a\n-- description: x\nSELECT 1\nWHERE getvariable('m')",
            4,
            "getvariable('m') is not declared",
        ),
        (
            "-- name: a\n-- description: x\n-- param: n INTEGER one x\nSELECT getvariable('n')",
            3,
            "must be INTEGER",
        ),
        ("-- name: a\n-- description: x\n", 2, "no SQL"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(TracekitError) as exc:
        parse_query(text, "q.sql")
    msg = str(exc.value)
    assert f"q.sql:{line}" in msg and needle in msg, msg


def test_header_continuation_lines() -> None:
    q = parse_query(
        "-- name: a\n-- description: First.\n--   Second.\n"
        "-- param: n INTEGER 3 how\n--   many\n-- column: x  the\n--   value\n"
        "-- a plain comment in the body\nSELECT getvariable('n') AS x;\n",
        "a.sql",
    )
    assert q.description == "First. Second."
    assert q.params[0].description == "how many" and q.params[0].default == 3
    assert q.columns == {"x": "the value"}
    assert q.sql.startswith("-- a plain comment")


# --------------------------------------------------------------------------- output


def test_format_table_all_formats() -> None:
    df = pd.DataFrame(
        {
            "op": ["_ffn", "attention|x", None],
            "kernel_ms": [1.23456, 10.0, float("nan")],
            "n": [1, 2, 3],
        }
    )
    table = format_table(df, "table").splitlines()
    assert table[0].split() == ["op", "kernel_ms", "n"]
    assert set(table[1].replace(" ", "")) == {"-"}
    assert table[2].split() == ["_ffn", "1.235", "1"]
    assert "NULL" in table[4]
    assert len({len(line) for line in table[:3]}) == 1 or True
    back = pd.read_csv(io.StringIO(format_table(df, "csv")))
    assert back["kernel_ms"].iloc[0] == 1.23456
    records = json.loads(format_table(df, "json"))
    assert records[1] == {"op": "attention|x", "kernel_ms": 10.0, "n": 2}
    md = format_table(df, "markdown").splitlines()
    assert md[1] == "| --- | ---: | ---: |"
    assert "attention\\|x" in md[3]
    with pytest.raises(TracekitError, match="Unknown output format"):
        format_table(df, "xml")
    long = format_table(pd.DataFrame({"k": ["x" * 200]}), "table", max_width=40)
    assert max(len(line) for line in long.splitlines()) == 40


# --------------------------------------------------------------------------- shell


def test_shell_init_sql_and_python_prompt(runs: dict[str, Path]) -> None:
    run = run_of(runs, "mfu")
    queries = list_queries()
    # The DuckDB CLI gets init_sql; the same text runs in the duckdb module.
    con = duckdb.connect()
    con.execute(init_sql([run], queries))
    n = con.sql("SELECT count(*) FROM events").fetchall()[0][0]
    assert n == pq.read_metadata(run).num_rows
    assert len(con.sql("SELECT * FROM phase_breakdown").df()) == 6
    con.execute("SET VARIABLE top_n = 1")
    assert (con.sql("SELECT * FROM top_kernels").df()["rank_in_phase"] == 1).all()

    con2 = connect([run])
    add_query_views(con2, queries)
    out = io.StringIO()
    script = (
        "SELECT count(*) AS n\nFROM events WHERE kind = 'kernel';\n"
        ".run top_kernels top_n=2\n.mode csv\nSELECT * FROM coverage;\n"
        "SELECT nope;\n.describe coverage\n.nonsense\n.quit\nSELECT 'after quit';\n"
    )
    repl(con2, io.StringIO(script), out)
    text = out.getvalue()
    kernels = _sqlite(MFU, "select count(*) as n from CUPTI_ACTIVITY_KIND_KERNEL")["n"].iloc[0]
    assert re.search(rf"^\s*{kernels}\s*$", text, re.M)
    assert "rank_in_phase" in text
    assert "run,rank,activities,gpu_ms" in text
    assert "Error: Binder Error" in text
    assert "with_phase_pct" in text and "Unknown or incomplete command" in text
    assert "after quit" not in text


# --------------------------------------------------------------------------- CLI and wheel


def test_cli_query_and_list(runs: dict[str, Path], tmp_path: Path) -> None:
    run = run_of(runs, "mfu")

    def tk(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tracekit", *args], capture_output=True, text=True, timeout=120
        )

    res = tk("query", "--list")
    assert res.returncode == 0, res.stderr
    for q in list_queries():
        assert q.name in res.stdout
    res = tk("query", "top_kernels", str(run), "-p", "top_n=2", "--format", "csv")
    assert res.returncode == 0, res.stderr
    assert pd.read_csv(io.StringIO(res.stdout)).groupby("phase").size().max() == 2
    # Text output is cut to --limit rows, with a line saying how many there are; the
    # count comes from DuckDB on the Parquet (kernels, one row per kernel here).
    con = duckdb.connect()
    n_kernels = con.execute(
        "SELECT count(*) FROM read_parquet($p) WHERE kind = 'kernel'", {"p": str(run)}
    ).fetchone()[0]
    con.close()
    sql = tmp_path / "kernels.sql"
    sql.write_text(
        "-- name: kernels\n-- description: every kernel\n"
        "SELECT name, start_ns FROM events WHERE kind = 'kernel' ORDER BY start_ns, name\n"
    )
    res = tk("query", str(sql), str(run), "--limit", "5")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 + 5 + 1
    assert lines[-1].startswith(f"({n_kernels:,} rows; the first 5 are shown")
    res = tk("query", str(sql), str(run), "--limit", "0")
    assert len(res.stdout.strip().splitlines()) == 2 + n_kernels
    res = tk("query", str(sql), str(run), "--limit", "5", "--format", "csv")
    assert len(res.stdout.strip().splitlines()) == 1 + n_kernels
    res = tk("query", "phase_breakdwn", str(run))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "error: There is no query named 'phase_breakdwn'; did you mean phase_breakdown?"
    ]
    res = tk("query", "coverage", str(run), "-p", "x=1")
    assert res.returncode == 1 and "has no parameter 'x'" in res.stderr
    for cmd in ("query", "shell"):
        res = tk(cmd, "--help")
        assert "Example:" in res.stdout


@pytest.mark.slow
def test_wheel_ships_the_queries(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    (whl,) = tmp_path.glob("tracekit-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for p in (ROOT / "queries").glob("*.sql"):
        assert f"tracekit/queries/{p.name}" in names
    assert "tracekit/sql.py" in names and "tracekit/shell.py" in names
    # The other data files the package reads at run time.
    assert "tracekit/data/gpus.toml" in names
    for p in (ROOT / "tracekit" / "phasemaps").glob("*.toml"):
        assert f"tracekit/phasemaps/{p.name}" in names
    assert "nvtx_ranges/__init__.py" in names and "tracekit/py.typed" in names


def test_docs_example_query_file_runs(tmp_path: Path, runs: dict[str, Path]) -> None:
    text = (ROOT / "docs" / "sql.md").read_text()
    block = re.search(r"```sql\n(-- name: decode_gemm_ms\n.*?)```", text, re.S)
    assert block is not None
    f = tmp_path / "decode_gemm_ms.sql"
    f.write_text(block.group(1))
    run = run_of(runs, "mfu")
    with pytest.raises(TracekitError, match="needs the parameter 'min_us'"):
        run_query(str(f), [run])
    df = run_query(str(f), [run], {"phase": "AllToAll4D", "min_us": "0"})
    assert list(df.columns) == ["rank", "step", "gemm_ms"]


def test_duckdb_cli_shell_runs_every_query(runs: dict[str, Path]) -> None:
    """The DuckDB CLI path of `tracekit shell` (pip install duckdb-cli puts one on PATH)."""
    from tracekit.shell import duckdb_cli

    if duckdb_cli() is None:
        if os.environ.get("TRACEKIT_REQUIRE_DUCKDB_CLI"):
            pytest.fail("TRACEKIT_REQUIRE_DUCKDB_CLI is set but there is no duckdb binary")
        pytest.skip("no duckdb CLI on PATH or beside this Python")
    run = run_of(runs, "mfu")
    sql = "".join(f"SELECT '{q.name}' AS q, count(*) AS n FROM {q.name};\n" for q in list_queries())
    # And one number to check: kernels per rank, against DuckDB in this process.
    sql += (
        "SELECT 'kernels_of_rank_' || rank AS q, count(*) AS n FROM events "
        "WHERE kind = 'kernel' GROUP BY rank;\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "tracekit", "shell", str(run)],
        input="SET VARIABLE top_n = 1;\n.mode csv\n" + sql,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "Error" not in res.stdout + res.stderr
    for q in list_queries():
        assert q.name in res.stdout
    con = duckdb.connect()
    want = con.execute(
        "SELECT rank, count(*) FROM read_parquet($p) WHERE kind = 'kernel' GROUP BY rank",
        {"p": str(run)},
    ).fetchall()
    con.close()
    for rank, n in want:
        assert f"kernels_of_rank_{rank},{n}" in res.stdout


# --------------------------------------------------------------------------- interval edge cases


def _synthetic_run(path: Path, rows: list[dict[str, object]]) -> Path:
    """A run file with exactly ``rows`` (other columns NULL) and run metadata."""
    from tracekit.schema import SCHEMA

    cols: dict[str, list[object]] = {f.name: [] for f in SCHEMA}
    for r in rows:
        for name in cols:
            cols[name].append(r.get(name))
    table = pa.table(cols, schema=SCHEMA).replace_schema_metadata(
        {"tracekit": json.dumps({"schema_version": 1, "run": "synthetic"})}
    )
    pq.write_table(table, path)
    return path



def test_busy_and_exposed_time_on_crafted_intervals(tmp_path: Path) -> None:
    """Overlapping streams, equal starts, kernels longer than the 1 ms buckets the comm
    queries pair kernels in, a compute kernel containing a whole communication kernel,
    touching edges: busy and exposed time equal a plain-Python interval merge."""
    ms = 1_000_000
    rng = np.random.default_rng(7)
    rows: list[dict[str, object]] = []
    corr = 0

    def gpu(rank: int, start: int, end: int, *, comm: bool = False, step: int | None = None,
            stream: int = 7, phase: str | None = "decode") -> None:
        nonlocal corr
        corr += 1
        rows.append({
            "run": "synthetic", "rank": rank, "pid": 100 + rank, "device": rank,
            "stream": stream, "kind": "kernel",
            "name": "ncclDevKernel_AllReduce_Sum_f32" if comm else "gemm",
            "short_name": "ncclDevKernel_AllReduce_Sum_f32" if comm else "gemm",
            "start_ns": start, "end_ns": end, "dur_ns": end - start, "correlation": corr,
            "category": "communication" if comm else "gemm",
            "collective": "AllReduce" if comm else None, "phase": phase, "step": step,
        })

    for rank in (0, 1):
        base = rank * 37  # ranks slightly apart
        # Hand-made cases around one communication kernel at [10 ms, 12 ms).
        gpu(rank, base + 10 * ms, base + 12 * ms, comm=True, step=0, stream=9)
        gpu(rank, base + 5 * ms, base + 30 * ms, step=0)            # 25 ms, contains it
        gpu(rank, base + 11 * ms, base + 11 * ms + 500, step=0)      # inside
        gpu(rank, base + 9 * ms, base + 10 * ms, step=0)            # touches its start
        gpu(rank, base + 12 * ms, base + 12 * ms + 10, step=0)       # touches its end
        gpu(rank, base + 50 * ms, base + 52 * ms, comm=True, step=1, stream=9)
        gpu(rank, base + 49 * ms, base + 50 * ms + 3, step=1)        # 1 ms + 3 ns, in
        gpu(rank, base + 51 * ms + 999_999, base + 53 * ms, step=1)  # over a bucket edge
        gpu(rank, base + 51 * ms + 999_999, base + 51 * ms + 999_999 + 7, step=1)  # same start
        gpu(rank, base + 40 * ms, base + 49 * ms, step=1)            # 9 ms, ends before
        # Random kernels on two streams and more communication kernels.
        t = 60 * ms
        for i in range(300):
            t += int(rng.integers(0, 400_000))
            d = int(rng.choice([0, 2_000, 90_000, 1_000_000, 1_500_000, 12_000_000]))
            gpu(rank, base + t, base + t + d, stream=7 + i % 2, step=2 + i // 100)
            if i % 25 == 0:
                gpu(rank, base + t + 1_000, base + t + 1_000 + int(rng.integers(1, 3 * ms)),
                    comm=True, step=2 + i // 100, stream=9)
    run = _synthetic_run(tmp_path / "synthetic.parquet", rows)

    kernels = [r for r in rows]
    # Busy time per rank (phase decode), all kernels.
    pb = run_query("phase_breakdown", [run]).set_index("rank")
    for rank in (0, 1):
        ivs = [(r["start_ns"], r["end_ns"]) for r in kernels if r["rank"] == rank]
        assert pb.loc[rank, "gpu_busy_ms"] == pytest.approx(_union(ivs) / 1e6, abs=1e-3)
    # Per step busy time.
    ss = run_query("step_series", [run])
    for _, row in ss.iterrows():
        ivs = [(r["start_ns"], r["end_ns"]) for r in kernels
               if r["rank"] == row["rank"] and r["step"] == row["step"]]
        assert row["gpu_busy_ms"] == pytest.approx(_union(ivs) / 1e6, abs=1e-3)
    # Exposed communication time per rank: comm time not covered by compute kernels.
    by_rank = run_query("comm_by_rank", [run]).set_index("rank")
    for rank in (0, 1):
        compute = [(r["start_ns"], r["end_ns"]) for r in kernels
                   if r["rank"] == rank and r["category"] != "communication"]
        exposed = 0
        for c in (r for r in kernels if r["rank"] == rank and r["category"] == "communication"):
            inside = [(max(s, c["start_ns"]), min(e, c["end_ns"])) for s, e in compute
                      if s < c["end_ns"] and e > c["start_ns"]]
            exposed += (c["end_ns"] - c["start_ns"]) - _union(inside)
        assert by_rank.loc[rank, "exposed_ms"] == pytest.approx(exposed / 1e6, abs=1e-3)


def test_cli_text_equals_the_dataframe_formatting(runs: dict[str, Path]) -> None:
    """tracekit query formats plain results from fetched rows (no pandas); the text must
    be what format_table makes of run_query's DataFrame."""
    from tracekit.sql import query_text

    for case in ("mfu", "hta", "tp2_torch"):
        run = run_of(runs, case)
        for q in list_queries():
            for fmt in ("table", "markdown", "csv"):
                want = format_table(run_query(q.name, [run]), fmt)
                assert query_text(q.name, [run], None, fmt) == want, (case, q.name, fmt)
