"""``tracekit compare`` on real trace pairs.

Expected numbers come from the SOURCE files (sqlite3 on the nsys exports, the Kineto
JSON read with the json module), with the definitions written out here: kernel time
= sum of durations of kernels, memcpys and memsets; busy time = union of those
intervals per device (numpy); per-rank time = sum over ranks / ranks; time per step
= sum / (rank, step) pairs. Predicted ratios are computed by hand from the datasheet
figures in tracekit/data/gpus.toml (quoted in the comments), never read back from
the code under test.
"""

from __future__ import annotations

import functools
import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tracekit.compare import compare
from tracekit.compare_cli import split_sides, to_text
from tracekit.errors import TracekitError
from tracekit.gpus import find, lookup, table
from tracekit.ingest import ingest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
MFU_A = SHARED / "nsys" / "mfu_2gpu_before.sqlite"
MFU_B = SHARED / "nsys" / "mfu_2gpu_after.sqlite"
DIFF_A = SHARED / "kineto" / "hta" / "trace_diff_control.json.gz"  # 8x "NVIDIA A100-PG509-200"
DIFF_B = SHARED / "kineto" / "hta" / "trace_diff_test.json.gz"  # 2x "Tesla V100-SXM2-16GB"

pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="shared traces not beside the checkout")

# ProfilerStep#N ranges as the phase "train": gives the Kineto pair real, numbered steps.
STEP_MAP = """name = "profiler_steps"
step = []
layer = []
skip = []
[[phase]]
pattern = '^ProfilerStep#\\d+$'
phase = "train"
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("compare")
    pm = d / "steps.toml"
    pm.write_text(STEP_MAP)
    out = {}
    for key, src, phase_map in (
        ("mfu_a", MFU_A, "auto"),
        ("mfu_b", MFU_B, "auto"),
        ("diff_a", DIFF_A, str(pm)),
        ("diff_b", DIFF_B, str(pm)),
    ):
        out[key] = ingest([src], d / f"{key}.parquet", phase_map=phase_map, jobs=1).out
    return out


# --------------------------------------------------------------------------- raw oracles


@functools.cache
def nsys_intervals(path: Path) -> pd.DataFrame:
    """All GPU activities of an nsys export: device, short name (kernels), start, end."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    parts = [
        pd.read_sql(
            "select k.deviceId as device, s.value as short, k.start, k.end, 'kernel' as kind "
            "from CUPTI_ACTIVITY_KIND_KERNEL k join StringIds s on s.id = k.shortName",
            con,
        ),
        pd.read_sql(
            "select deviceId as device, null as short, start, end, 'memcpy' as kind from CUPTI_ACTIVITY_KIND_MEMCPY",
            con,
        ),
        pd.read_sql(
            "select deviceId as device, null as short, start, end, 'memset' as kind from CUPTI_ACTIVITY_KIND_MEMSET",
            con,
        ),
    ]
    con.close()
    return pd.concat(parts, ignore_index=True)


def union_ns(df: pd.DataFrame, by: str = "device") -> int:
    """Length of the union of [start, end) intervals, summed over ``by`` groups."""
    total = 0
    for _, g in df.groupby(by):
        g = g.sort_values(["start", "end"])
        s, e = g["start"].to_numpy(), g["end"].to_numpy()
        run_end = np.maximum.accumulate(e)
        new = np.r_[True, s[1:] > run_end[:-1]]
        ids = np.cumsum(new)
        starts = pd.Series(s).groupby(ids).min()
        ends = pd.Series(run_end).groupby(ids).max()
        total += int((ends - starts).sum())
    return total


def kineto_events(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return list(json.load(fh)["traceEvents"])


@functools.cache
def kineto_gpu(path: Path) -> pd.DataFrame:
    """GPU activities with the launching runtime call's pid/tid/ts (by correlation)."""
    ev = kineto_events(path)
    gpu = pd.DataFrame(
        [
            (
                e["name"],
                e["args"]["device"],
                e["args"].get("correlation"),
                e["ts"] * 1000,
                (e["ts"] + e["dur"]) * 1000,
            )
            for e in ev
            if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")
        ],
        columns=["name", "device", "corr", "start", "end"],
    )
    rt = pd.DataFrame(
        [
            (e["args"]["correlation"], e["pid"], e["tid"], e["ts"] * 1000)
            for e in ev
            if e.get("ph") == "X"
            and e.get("cat") in ("cuda_runtime", "cuda_driver")
            and "correlation" in e.get("args", {})
        ],
        columns=["corr", "pid", "tid", "launch"],
    )
    steps = pd.DataFrame(
        [
            (e["pid"], e["tid"], e["ts"] * 1000, (e["ts"] + e["dur"]) * 1000)
            for e in ev
            if e.get("ph") == "X" and str(e.get("name", "")).startswith("ProfilerStep#")
        ],
        columns=["pid", "tid", "s0", "s1"],
    )
    g = gpu.merge(rt, on="corr", how="left")
    # The step whose range on the launching thread holds the launch (steps do not nest).
    g["step"] = -1
    for i, st in steps.reset_index(drop=True).iterrows():
        inside = (
            (g["pid"] == st.pid)
            & (g["tid"] == st.tid)
            & (g["launch"] >= st.s0)
            & (g["launch"] <= st.s1)
        )
        g.loc[inside, "step"] = i
    return g


def row(res, phase: str, level: str, key: str) -> pd.Series:
    r = res.rows
    hit = r[(r.phase == phase) & (r.level == level) & (r.key == key)]
    assert len(hit) == 1, (phase, level, key)
    return hit.iloc[0]


# --------------------------------------------------------------------------- GPU table


def test_gpu_table_every_number_has_a_source() -> None:
    for g in table().values():
        assert g.source.startswith("https://"), g.key
        assert g.mem_bw_gbps > 0 and (g.fp16_tflops or 0) > 0, g.key
        assert g.link == "none" or (g.link_gbps or 0) > 0, g.key
        if g.bf16_tflops is not None:  # dense bf16 and fp16 tensor peaks are equal on these parts
            assert g.bf16_tflops == g.fp16_tflops, g.key
    need = [
        "v100-sxm2",
        "v100-pcie",
        "t4",
        "a10",
        "a40",
        "a100-sxm4-40gb",
        "a100-sxm4-80gb",
        "a100-pcie-40gb",
        "a100-pcie-80gb",
        "a800-sxm4-80gb",
        "l4",
        "l40s",
        "h100-sxm",
        "h100-pcie",
        "h100-nvl",
        "h800-sxm",
        "h20",
        "h200-sxm",
        "b200",
        "mi250x",
        "mi300x",
    ]
    assert set(need) <= set(table())


@pytest.mark.parametrize(
    ("model", "key"),
    [
        # model strings exactly as the shared traces record them
        ("NVIDIA A100-PG509-200", "a100-sxm4-40gb"),
        ("Tesla V100-SXM2-16GB", "v100-sxm2"),
        ("Tesla V100-SXM2-32GB", "v100-sxm2"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA B200", "b200"),
        ("AMD Instinct MI300X", "mi300x"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "h100-sxm"),
    ],
)
def test_model_strings_resolve(model: str, key: str) -> None:
    assert lookup(model).key == key


def test_unknown_model_is_a_clear_error() -> None:
    assert find("AMD Radeon Graphics") is None  # what the ROCm 6.2 HTA trace records
    with pytest.raises(TracekitError, match="--gpu-a"):
        lookup("AMD Radeon Graphics", "--gpu-a")


def test_mi250x_is_per_gcd() -> None:
    g = lookup("AMD Instinct MI250X")
    assert g.tflops("bf16") == pytest.approx(383.0 / 2)  # datasheet 383.0 per OAM, 2 GCDs
    assert g.device_mem_bw_gbps == pytest.approx(3276.8 / 2)


# --------------------------------------------------------------------------- nsys pair


def test_nsys_pair_matches_raw_sqlite(runs: dict[str, Path]) -> None:
    res = compare(
        [runs["mfu_a"]],
        [runs["mfu_b"]],
        gpu_a="H100 SXM",
        gpu_b="H100 SXM",
        levels=["phase", "category", "kernel"],
        phases=False,
    )
    ra, rb = nsys_intervals(MFU_A), nsys_intervals(MFU_B)
    na, nb = ra["device"].nunique(), rb["device"].nunique()
    assert (na, nb) == (2, 2)
    tot_a, tot_b = (ra.end - ra.start).sum() / na, (rb.end - rb.start).sum() / nb
    ph = row(res, "(all)", "phase", "(all)")
    assert ph.unit == "run"
    assert ph.kernel_a == pytest.approx(tot_a, rel=1e-12)
    assert ph.kernel_b == pytest.approx(tot_b, rel=1e-12)
    assert ph.ratio == pytest.approx(tot_b / tot_a, rel=1e-12)
    assert ph.busy_a == pytest.approx(union_ns(ra) / na, rel=1e-12)
    assert ph.busy_ratio == pytest.approx((union_ns(rb) / nb) / (union_ns(ra) / na), rel=1e-12)
    # Every kernel short name: per-rank kernel time on both sides and the ratio.
    ka = (
        ra[ra.kind == "kernel"].assign(d=lambda x: x.end - x.start).groupby("short")["d"].sum() / na
    )
    kb = (
        rb[rb.kind == "kernel"].assign(d=lambda x: x.end - x.start).groupby("short")["d"].sum() / nb
    )
    got = res.rows[res.rows.level == "kernel"].set_index("key")
    for name in ka.index.union(kb.index):
        a, b = ka.get(name, 0.0), kb.get(name, 0.0)
        assert got.loc[name, "kernel_a"] == pytest.approx(a, rel=1e-12), name
        assert got.loc[name, "kernel_b"] == pytest.approx(b, rel=1e-12), name
        if a:
            assert got.loc[name, "ratio"] == pytest.approx(b / a, rel=1e-12), name
    # Communication = the NCCL kernels (the only collectives in these traces).
    ca = (ra[ra.short.fillna("").str.startswith("nccl")].pipe(lambda x: x.end - x.start)).sum() / na
    cb = (rb[rb.short.fillna("").str.startswith("nccl")].pipe(lambda x: x.end - x.start)).sum() / nb
    com = row(res, "(all)", "category", "communication")
    assert com.ratio == pytest.approx(cb / ca, rel=1e-12)
    assert com.share_a == pytest.approx(ca / tot_a, rel=1e-12)
    # Same GPU, same TP on both sides: the hardware predicts no change anywhere.
    assert set(res.rows.predicted.dropna().round(12)) == {1.0}
    assert res.rows.noise.isna().all()  # single runs: noise unknown
    assert len(res.verdicts) == 1 and "0.91x" in res.verdicts.verdict.iloc[0]


def test_repeats_spread_and_noise(runs: dict[str, Path]) -> None:
    """Side A = two runs (before, after), side B = after: B lies inside A's range."""
    res = compare(
        [runs["mfu_a"], runs["mfu_b"]],
        [runs["mfu_b"]],
        predict=False,
        phases=False,
        levels=["phase"],
    )
    ra, rb = nsys_intervals(MFU_A), nsys_intervals(MFU_B)
    va, vb = (ra.end - ra.start).sum() / 2, (rb.end - rb.start).sum() / 2
    ph = row(res, "(all)", "phase", "(all)")
    mean = (va + vb) / 2
    assert ph.kernel_a == pytest.approx(mean, rel=1e-12)
    assert ph.spread_a == pytest.approx(abs(va - vb) / mean, rel=1e-9)
    assert (ph.n_a, ph.n_b) == (2, 1)
    assert ph.noise is True or ph.noise == True  # noqa: E712
    assert "inside the repeat-to-repeat noise" in res.verdicts.verdict.iloc[0]


def test_tp_degrees_change_the_prediction(runs: dict[str, Path]) -> None:
    """TP 2 vs TP 4 on one GPU model: GEMM work per rank halves, ring all-reduce
    traffic per rank goes from 2(1/2) to 2(3/4) of the message, norms stay."""
    kw = dict(
        gpu_a="H100 SXM",
        gpu_b="H100 SXM",
        tp_a=2,
        tp_b=4,
        phases=False,
        levels=["phase", "category"],
    )
    mean = compare([runs["mfu_a"]], [runs["mfu_b"]], **kw)
    assert row(mean, "(all)", "category", "gemm").predicted == pytest.approx((1 / 4) / (1 / 2))
    assert row(mean, "(all)", "category", "communication").predicted == pytest.approx(
        (2 * 3 / 4) / (2 * 1 / 2)
    )
    assert row(mean, "(all)", "category", "norm").predicted == pytest.approx(1.0)
    summed = compare([runs["mfu_a"]], [runs["mfu_b"]], ranks="sum", **kw)
    assert row(summed, "(all)", "category", "gemm").predicted == pytest.approx(0.5 * 4 / 2)
    ra = nsys_intervals(MFU_A)
    assert row(summed, "(all)", "phase", "(all)").kernel_a == pytest.approx(
        (ra.end - ra.start).sum(), rel=1e-12
    )
    assert any("TP degrees differ" in n for n in mean.notes)


def test_unknown_gpu_needs_an_override(runs: dict[str, Path]) -> None:
    # mfu exports had TARGET_INFO_GPU dropped: no model recorded.
    with pytest.raises(TracekitError, match="records no GPU model; name it with --gpu-a"):
        compare([runs["mfu_a"]], [runs["mfu_b"]])
    with pytest.raises(TracekitError, match="not in tracekit's GPU table"):
        compare([runs["mfu_a"]], [runs["mfu_b"]], gpu_a="H100 SXM", gpu_b="Radeon 7900")


# --------------------------------------------------------------------------- Kineto pair


def test_kineto_pair_a100_vs_v100(runs: dict[str, Path]) -> None:
    res = compare(
        [runs["diff_a"]],
        [runs["diff_b"]],
        tp_a=1,
        tp_b=1,
        phases=False,
        levels=["phase", "category", "name"],
    )
    ga, gb = kineto_gpu(DIFF_A), kineto_gpu(DIFF_B)
    ta, tb = (ga.end - ga.start).sum(), (gb.end - gb.start).sum()  # one rank each
    ph = row(res, "(all)", "phase", "(all)")
    assert ph.kernel_a == pytest.approx(ta, rel=1e-12)
    assert ph.ratio == pytest.approx(tb / ta, rel=1e-12)
    assert ph.busy_b == pytest.approx(union_ns(gb), rel=1e-12)
    na = ga.assign(d=ga.end - ga.start).groupby("name")["d"].sum()
    nb = gb.assign(d=gb.end - gb.start).groupby("name")["d"].sum()
    got = res.rows[res.rows.level == "name"].set_index("key")
    both = na.index.intersection(nb.index)
    assert len(both) > 50
    for name in both:
        assert got.loc[name, "ratio"] == pytest.approx(nb[name] / na[name], rel=1e-12), name
    # V100 has no bf16: compute predictions use fp16 on both sides.
    assert res.dtype == "fp16"
    # Datasheets: A100 40GB SXM4 fp16 312 TFLOPS, 1555 GB/s, NVLink 600 GB/s;
    # V100 SXM2 fp16 125 TFLOPS, 900 GB/s, NVLink 300 GB/s. B/A time = A cap / B cap.
    by_cat = res.rows[(res.rows.level == "category")].set_index("key")
    assert by_cat.loc["gemm", "predicted"] == pytest.approx(312 / 125)
    assert by_cat.loc["elementwise", "predicted"] == pytest.approx(1555 / 900)
    assert by_cat.loc["communication", "predicted"] == pytest.approx(600 / 300)
    assert np.isnan(by_cat.loc["other", "predicted"])
    # The phase: A's category mix re-timed on B, over the categories with a prediction.
    hand = {"gemm": 312 / 125, "communication": 600 / 300}
    hand |= {c: 1555 / 900 for c in ("elementwise", "norm", "reduce", "memory")}
    cats = by_cat.loc[[c for c in by_cat.index if c in hand]]
    pred = sum(cats.loc[c, "kernel_a"] * hand[c] for c in cats.index) / cats["kernel_a"].sum()
    assert ph.predicted == pytest.approx(pred, rel=1e-12)
    assert ph.pred_cover == pytest.approx(cats["kernel_a"].sum() / ph.kernel_a, rel=1e-12)
    assert ph.deviation == pytest.approx((tb / ta) / pred, rel=1e-12)


def test_kineto_pair_per_step(runs: dict[str, Path]) -> None:
    """Steps = ProfilerStep ranges that launched GPU work (launch on the range's thread)."""
    res = compare([runs["diff_a"]], [runs["diff_b"]], tp_a=1, tp_b=1, levels=["phase"])
    for side, src in (("a", DIFF_A), ("b", DIFF_B)):
        g = kineto_gpu(src)
        train = g[g.step >= 0]
        steps = train.step.nunique()
        ph = row(res, "train", "phase", "(all)")
        assert ph.unit == "step"
        assert ph[f"steps_{side}"] == steps
        assert ph[f"kernel_{side}"] == pytest.approx(
            (train.end - train.start).sum() / steps, rel=1e-12
        )
        rest = g[g.step < 0]
        un = row(res, "(unattributed)", "phase", "(all)")
        assert un.unit == "run"
        assert un[f"kernel_{side}"] == pytest.approx((rest.end - rest.start).sum(), rel=1e-12)
    assert set(res.verdicts.phase) == {"train", "(unattributed)"}


# --------------------------------------------------------------------------- CLI and formats


def test_split_sides() -> None:
    assert split_sides(["a1", "a2", "--vs", "b1", "b2"]) == (["a1", "a2"], ["b1", "b2"])
    with pytest.raises(TracekitError, match="--vs"):
        split_sides(["a1", "a2", "a3"])
    with pytest.raises(TracekitError, match="Unknown option --bogus"):
        split_sides(["a", "--bogus", "b"])


def test_cli_json_csv_markdown_and_globs(runs: dict[str, Path], tmp_path: Path) -> None:
    from tracekit.cli import app

    for i in (1, 2):
        shutil.copy(runs["mfu_a"], tmp_path / f"before_{i}.parquet")
    cli = CliRunner()
    r = cli.invoke(
        app,
        [
            "compare",
            str(tmp_path / "before_*.parquet"),
            "--vs",
            str(runs["mfu_b"]),
            "--gpu-a",
            "H100 SXM",
            "--gpu-b",
            "NVIDIA H100 80GB HBM3",
            "--no-phases",
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["a"]["repeats"] == 2 and doc["b"]["gpu"]["key"] == "h100-sxm"
    assert doc["ratio"].startswith("B/A")
    ph = next(x for x in doc["rows"] if x["level"] == "phase")
    assert ph["spread_a"] == 0.0 and ph["noise"] is False
    r = cli.invoke(
        app, ["compare", str(runs["mfu_a"]), str(runs["mfu_b"]), "--no-predict", "--format", "csv"]
    )
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].startswith("phase,level,key,unit")
    r = cli.invoke(app, ["compare", str(runs["mfu_a"]), str(runs["mfu_b"]), "--no-predict"])
    assert r.exit_code == 0 and "verdict:" in r.output
    r = cli.invoke(app, ["compare", str(runs["mfu_a"]), str(runs["mfu_b"])])
    assert isinstance(r.exception, TracekitError)
    res = compare([runs["mfu_a"]], [runs["mfu_b"]], predict=False, phases=False)
    md = to_text(res, "markdown")
    assert (
        md.startswith("# Compare: A = mfu_2gpu_before, B = mfu_2gpu_after")
        and "| phase | level |" in md
    )
    r = cli.invoke(app, ["gpus", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == len(table())
