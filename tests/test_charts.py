"""Charts by their Vega-Lite spec (``chart.to_dict()``), drawn from real runs.

The runs are ingested here from the shared traces: the 2×H100 Nsight Systems export
``mfu_2gpu_before/after.sqlite`` (phases FlashAttnFunc and AllToAll4D, by a phase
map written below) and the 8-rank PARAM DLRM Kineto traces (NCCL all-to-all and
all-reduce). A chart must draw exactly what its table says: the tests compare the
values inside the spec with the table the chart was given, and check the encodings
a reader relies on (which field is stacked, which colours are fixed, what is faceted).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import pytest

from tracekit import charts
from tracekit.errors import TracekitError
from tracekit.ingest import ingest
from tracekit.sql import run_query

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
MFU_BEFORE = SHARED / "nsys" / "mfu_2gpu_before.sqlite"
MFU_AFTER = SHARED / "nsys" / "mfu_2gpu_after.sqlite"
DLRM = SHARED / "kineto" / "param-dlrm-8rank" / "dlrm_kineto.tar.gz"
#: The mfu traces mark attention and the all-to-all with NVTX ranges named after the
#: autograd functions; each instance is a step of that phase.
MFU_PHASES = """name = "mfu-test"
[[phase]]
pattern = '^(?P<phase>FlashAttnFunc|AllToAll4D)\\b'
"""


def _ingest_mfu(tmp: Path, trace: Path) -> Path:
    if not trace.exists():
        pytest.skip("shared traces not beside the checkout")
    pm = tmp / "mfu_phases.toml"
    pm.write_text(MFU_PHASES)
    out = tmp / f"{trace.stem}.parquet"
    ingest([trace], out, phase_map=str(pm), jobs=1)
    return out


@pytest.fixture(scope="module")
def mfu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ingest_mfu(tmp_path_factory.mktemp("mfu"), MFU_BEFORE)


@pytest.fixture(scope="module")
def mfu_after(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ingest_mfu(tmp_path_factory.mktemp("mfu_after"), MFU_AFTER)


@pytest.fixture(scope="module")
def dlrm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DLRM.exists():
        pytest.skip("shared traces not beside the checkout")
    d = tmp_path_factory.mktemp("dlrm")
    with tarfile.open(DLRM) as tf:
        tf.extractall(d, members=[m for m in tf.getmembers() if m.name.endswith(".json")], filter="data")
    out = d / "dlrm.parquet"
    ingest(sorted(d.rglob("*.json")), out, jobs=2)
    return out


def _values(spec: dict[str, Any]) -> pd.DataFrame:
    """The inline data of a spec (Altair puts it under ``datasets``)."""
    (rows,) = spec["datasets"].values()
    return pd.DataFrame(rows)


def _layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    inner = spec.get("spec", spec)
    return list(inner.get("layer", [inner]))


def _mark(layer: dict[str, Any]) -> str:
    m = layer["mark"]
    return str(m["type"] if isinstance(m, dict) else m)


def test_op_share_segments_are_the_table_shares(mfu: Path) -> None:
    table = run_query("op_share", [mfu])
    spec = charts.op_share(table, top=5).to_dict()
    data = _values(spec)
    bars, text = _layers(spec)
    assert (_mark(bars), _mark(text)) == ("bar", "text")
    assert bars["encoding"]["x"]["field"] == "x0" and bars["encoding"]["x2"]["field"] == "x1"
    # Every phase stacks to its whole kernel time (shares are rounded to 0.01%).
    ends = data.groupby("phase")["x1"].max()
    assert ends.to_dict() == pytest.approx(dict.fromkeys(ends.index, 100.0), abs=0.1)
    # Named operators keep their share; the rest is lumped into (other).
    for row in data.itertuples():
        assert row.x1 - row.x0 == pytest.approx(row.share_pct)
        if row.op != charts.OTHER:
            want = table[(table.phase == row.phase) & (table.op == row.op)].share_pct.item()
            assert row.share_pct == pytest.approx(want)
    ranking = table.groupby("op").kernel_ms.sum().drop("(no op)", errors="ignore")
    legend = bars["encoding"]["color"]["sort"]
    assert legend[:5] == list(ranking.sort_values(ascending=False).index[:5])
    assert legend[-1] == charts.OTHER
    assert list(bars["encoding"]["y"]["sort"]) == list(pd.unique(table.phase))


def test_category_share_uses_fixed_colours(mfu: Path) -> None:
    table = run_query("category_share", [mfu])
    spec = charts.category_share(table).to_dict()
    scale = _layers(spec)[0]["encoding"]["color"]["scale"]
    assert scale["range"] == [charts.CATEGORY_COLORS[c] for c in scale["domain"]]
    assert set(scale["domain"]) == set(table.category)
    assert len(_values(spec)) == len(table)


def test_op_donut_is_one_phase(mfu: Path) -> None:
    table = run_query("op_share", [mfu])
    spec = charts.op_donut(table, "AllToAll4D").to_dict()
    data = _values(spec)
    arcs = _layers(spec)[0]
    assert _mark(arcs) == "arc" and arcs["encoding"]["theta"]["field"] == "share_pct"
    assert set(data.phase) == {"AllToAll4D"}
    assert data.share_pct.sum() == pytest.approx(100, abs=0.1)
    assert spec["title"] == "AllToAll4D: operator share of kernel time"
    with pytest.raises(TracekitError, match="no phase 'prefill'"):
        charts.op_donut(table, "prefill")


def test_phase_split_stacks_each_rank_to_its_busy_time(mfu: Path) -> None:
    table = run_query("phase_breakdown", [mfu])
    spec = charts.phase_split(table).to_dict()
    data = _values(spec)
    totals = table.groupby("rank").gpu_busy_ms.sum()
    ends = data.groupby("who").x1.max()
    assert ends.to_dict() == pytest.approx({f"rank {r}": v for r, v in totals.items()})
    with pytest.raises(TracekitError, match="not 'wall'"):
        charts.phase_split(table, measure="wall")


def test_step_latency_one_point_per_step(mfu: Path) -> None:
    table = run_query("step_series", [mfu])
    spec = charts.step_latency(table).to_dict()
    data = _values(spec)
    assert len(data) == len(table)
    assert spec["encoding"]["x"]["field"] == "start_s"
    assert spec["encoding"]["y"]["field"] == "latency_ms"
    # Every step of these traces has a step range, so latency is its wall time.
    assert data.latency_ms.tolist() == table.wall_ms.tolist()
    assert "vconcat" not in spec  # no batch sizes recorded in these traces


def test_step_latency_adds_batch_size_panel(mfu: Path) -> None:
    # These traces carry no batch payload; attach a batch size per step (the real
    # step table, with the column a payload would fill) to check the second panel.
    table = run_query("step_series", [mfu])
    table["batch_size"] = (table["step"] % 4 + 1).astype("Int64")
    spec = charts.step_latency(table).to_dict()
    top, bottom = spec["vconcat"]
    assert top["encoding"]["y"]["field"] == "latency_ms"
    assert bottom["encoding"]["y"]["field"] == "batch_size"
    assert spec["resolve"]["scale"]["x"] == "shared"


def test_comm_transfer_plus_wait_is_the_rank_total(dlrm: Path) -> None:
    from tracekit.comm import comm_table

    table = comm_table([dlrm], "rank")
    spec = charts.comm_transfer_wait(table).to_dict()
    data = _values(spec)
    assert set(data.part) == {"transfer", "wait"}
    per_rank = data.groupby("rank").ms.sum()
    want = (table.set_index("rank").transfer_ms + table.set_index("rank").wait_ms).sort_index()
    assert per_rank.sort_index().tolist() == pytest.approx(want.tolist())
    assert spec["encoding"]["color"]["scale"]["range"] == list(charts.COMM_COLORS.values())
    assert spec["encoding"]["y"]["sort"] == [f"rank {r}" for r in range(8)]


def test_compare_bars_ticks_and_labels(mfu: Path, mfu_after: Path) -> None:
    from tracekit.compare import compare
    from tracekit.report import compare_frame

    # The traces do not record the GPU model; both ran on H100s (h100_2gpu_1s is the
    # same machine), so the prediction is 1.0 everywhere.
    res = compare([mfu], [mfu_after], gpu_a="H100 SXM", gpu_b="H100 SXM")
    frame = compare_frame(res, "category")
    spec = charts.compare_ops(frame, a_label=res.a.label, b_label=res.b.label, what="category").to_dict()
    panels = spec["vconcat"]
    assert [p["title"]["text"] for p in panels] == [
        f"{ph} (per {u})" for ph, u in frame[["phase", "unit"]].drop_duplicates().itertuples(index=False)
    ]
    rows = res.rows[res.rows.level == "category"]
    for panel in panels:
        bars, ticks, text = panel["layer"]
        assert (_mark(bars), _mark(ticks), _mark(text)) == ("bar", "tick", "text")
        assert bars["encoding"]["yOffset"]["field"] == "side"
        data = pd.DataFrame(spec["datasets"][panel["data"]["name"]])
        b = data[data.side == res.b.label].set_index("name")
        a = data[data.side == res.a.label].set_index("name")
        phase = panel["title"]["text"].rsplit(" (per", 1)[0]
        want = rows[rows.phase == phase].set_index("key")
        assert a.ms.to_dict() == pytest.approx((want.kernel_a / 1e6).to_dict())
        assert b.ms.to_dict() == pytest.approx((want.kernel_b / 1e6).to_dict())
        assert b.pred_ms.to_dict() == pytest.approx((want.kernel_a / 1e6 * want.predicted).to_dict())
        for name, r in want.iterrows():
            assert b.loc[name, "text"].startswith(f"×{r.ratio:.2f} (pred ×{r.predicted:.2f})")


def test_missing_columns_are_named() -> None:
    with pytest.raises(TracekitError, match="needs the column\\(s\\) share_pct"):
        charts.op_share(pd.DataFrame({"phase": ["decode"], "op": ["ffn"], "kernel_ms": [1.0]}))
    with pytest.raises(TracekitError, match="empty table"):
        charts.category_share(
            pd.DataFrame(columns=["phase", "category", "gpu_ms", "share_pct"])
        )


def test_charts_are_pure(mfu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = run_query("op_share", [mfu])
    before = table.copy()
    chart = charts.op_share(table)
    assert isinstance(chart, alt.TopLevelMixin)
    pd.testing.assert_frame_equal(table, before)
    assert list(tmp_path.iterdir()) == []
