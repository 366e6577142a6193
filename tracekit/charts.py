"""Charts: pure functions from a result table (pandas) to an Altair chart.

Each function takes the table a query or analysis returns (the columns are named in
its docstring), draws it, and writes nothing: only the CLI and :mod:`tracekit.report`
write files.  Tables go in whole; the few reshapes a chart needs (top-N operators
with the rest lumped, stack offsets, a long form for grouped bars) are vectorised
pandas on the already-aggregated table, never on events.

Time semantics follow the queries: kernel time is a sum of ``dur_ns``, busy time is
the union of activity intervals, wall time is the step range on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import altair as alt
import numpy as np
import pandas as pd

from tracekit.classify import CATEGORIES
from tracekit.errors import TracekitError

#: Anything a chart function returns (all are top-level Vega-Lite specs).
Chart: TypeAlias = alt.Chart | alt.LayerChart | alt.FacetChart | alt.VConcatChart | alt.HConcatChart

OTHER = "(other)"
#: Fixed colours per category so that every chart and report uses the same ones.
CATEGORY_COLORS = {
    "gemm": "#4c78a8",
    "attention": "#f58518",
    "communication": "#e45756",
    "norm": "#72b7b2",
    "elementwise": "#54a24b",
    "reduce": "#eeca3b",
    "memory": "#b279a2",
    "other": "#9d755d",
    "(none)": "#bab0ac",
}
#: Transfer and wait of communication: wait is the time lost to the slowest rank.
COMM_COLORS = {"transfer": "#4c78a8", "wait": "#e45756"}
WIDTH = 520
#: Share labels are printed inside stack segments at least this wide (%).
MIN_LABEL_PCT = 6.0


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TracekitError(
            f"The {what} chart needs the column(s) {', '.join(missing)}; "
            f"the table has {', '.join(map(str, df.columns)) or 'none'}."
        )
    if df.empty:
        raise TracekitError(f"The {what} chart got an empty table; there is nothing to draw.")


def _order(values: pd.Series) -> list[Any]:
    """Distinct values in order of first appearance (queries sort phases by time)."""
    return list(pd.unique(values.dropna()))


def _top(
    df: pd.DataFrame,
    key: str,
    value: str,
    by: Sequence[str],
    top: int,
    keep_last: Sequence[str] = (),
) -> tuple[pd.DataFrame, list[str]]:
    """Keep the ``top`` keys by total ``value``; lump the others into ``(other)``.

    Returns the regrouped table (summed over ``by + [key]``) and the key order for
    legends: biggest first, then ``keep_last`` names and ``(other)``.
    """
    totals = df.groupby(key, dropna=False)[value].sum().sort_values(ascending=False, kind="stable")
    ranked = [k for k in totals.index if k not in keep_last]
    kept = set(ranked[:top]) | {k for k in keep_last if k in totals.index}
    out = df.assign(**{key: df[key].where(df[key].isin(kept), OTHER)})
    numeric = [
        c for c in out.columns if c not in (*by, key) and pd.api.types.is_numeric_dtype(out[c])
    ]
    out = out.groupby([*by, key], dropna=False, sort=False)[numeric].sum().reset_index()
    order = ranked[:top] + [k for k in keep_last if k in totals.index]
    if (~df[key].isin(kept)).any():
        order.append(OTHER)
    return out, order


def _stack(
    df: pd.DataFrame, by: Sequence[str], key: str, order: Sequence[str], value: str
) -> pd.DataFrame:
    """Add ``x0``/``x1`` stack offsets and ``mid`` (label position) in legend order."""
    rank = {k: i for i, k in enumerate(order)}
    out = df.assign(_k=df[key].map(rank)).sort_values([*by, "_k"], kind="stable")
    out["x1"] = out.groupby(list(by), sort=False)[value].cumsum()
    out["x0"] = out["x1"] - out[value]
    out["mid"] = (out["x0"] + out["x1"]) / 2
    return out.drop(columns="_k").reset_index(drop=True)


def _stacked_share(
    df: pd.DataFrame,
    *,
    key: str,
    key_title: str,
    order: Sequence[str],
    color: alt.Scale,
    ms_col: str,
    ms_title: str,
    title: str,
) -> Chart:
    """Horizontal 100% bars per phase (and run), one segment per ``key``."""
    runs = _order(df["run"]) if "run" in df.columns else []
    by = ["run", "phase"] if runs else ["phase"]
    data = _stack(df, by, key, order, "share_pct")
    data["label"] = np.where(
        data["share_pct"] >= MIN_LABEL_PCT,
        data["share_pct"].round(0).astype(int).astype(str) + "%",
        "",
    )
    phases = _order(df["phase"])
    tooltip = [
        *([alt.Tooltip("run:N")] if runs else []),
        alt.Tooltip("phase:N"),
        alt.Tooltip(f"{key}:N", title=key_title),
        alt.Tooltip("share_pct:Q", title="share of phase (%)", format=".1f"),
        alt.Tooltip(f"{ms_col}:Q", title=ms_title, format=",.3f"),
    ]
    if "kernel_ms_per_step" in data.columns or "gpu_ms_per_step" in data.columns:
        per_step = (
            "kernel_ms_per_step" if "kernel_ms_per_step" in data.columns else "gpu_ms_per_step"
        )
        tooltip.append(alt.Tooltip(f"{per_step}:Q", title="ms per step", format=",.4f"))
    base = alt.Chart(data).encode(y=alt.Y("phase:N", sort=phases, title="phase"))
    bars = base.mark_bar(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("x0:Q", title="share of the phase's time (%)", scale=alt.Scale(domain=[0, 100])),
        x2="x1:Q",
        color=alt.Color(
            f"{key}:N",
            title=key_title,
            sort=list(order),
            scale=color,
            legend=alt.Legend(labelLimit=220),
        ),
        tooltip=tooltip,
    )
    labels = base.mark_text(color="white", fontSize=10).encode(x="mid:Q", text="label:N")
    layered = alt.layer(bars, labels).properties(width=WIDTH, height=alt.Step(28))
    if len(runs) > 1:
        return layered.facet(row=alt.Row("run:N", sort=runs, title=None)).properties(title=title)
    return layered.properties(title=title)


def op_share(df: pd.DataFrame, *, top: int = 10) -> Chart:
    """Operator share of kernel time per phase, as stacked 100% bars.

    ``df`` is the ``op_share`` query result: ``run``, ``phase``, ``op``,
    ``kernel_ms``, ``share_pct`` (and ``kernel_ms_per_step``).  The ``top`` operators
    by kernel time get their own colour; the rest are lumped into ``(other)``.

    >>> op_share(run_query("op_share", ["run.parquet"])).to_dict()["title"]  # doctest: +SKIP
    'Operator share of kernel time per phase'
    """
    _require(df, ["phase", "op", "kernel_ms", "share_pct"], "operator share")
    by = [c for c in ("run", "phase") if c in df.columns]
    data, order = _top(df, "op", "kernel_ms", by, top, keep_last=["(no op)"])
    return _stacked_share(
        data,
        key="op",
        key_title="operator",
        order=order,
        color=alt.Scale(scheme="tableau20"),
        ms_col="kernel_ms",
        ms_title="kernel time (ms, sum of dur_ns)",
        title="Operator share of kernel time per phase",
    )


def category_share(df: pd.DataFrame) -> Chart:
    """Category share of GPU time (kernels, memcpy, memset) per phase, stacked 100% bars.

    ``df`` is the ``category_share`` query result: ``run``, ``phase``, ``category``,
    ``gpu_ms``, ``share_pct``.  Colours are fixed per category (:data:`CATEGORY_COLORS`).

    >>> category_share(run_query("category_share", ["run.parquet"]))  # doctest: +SKIP
    """
    _require(df, ["phase", "category", "gpu_ms", "share_pct"], "category share")
    present = set(df["category"])
    order = [c for c in (*CATEGORIES, "(none)") if c in present]
    order += sorted(present - set(order))
    palette = [CATEGORY_COLORS.get(c, "#bab0ac") for c in order]
    return _stacked_share(
        df,
        key="category",
        key_title="category",
        order=order,
        color=alt.Scale(domain=order, range=palette),
        ms_col="gpu_ms",
        ms_title="GPU time (ms, sum of dur_ns)",
        title="Category share of GPU time per phase",
    )


def op_donut(df: pd.DataFrame, phase: str, *, top: int = 8) -> Chart:
    """Donut of operator shares in one phase: the view of a bottleneck study.

    ``df`` is the ``op_share`` query result; ``phase`` picks the phase.  Several runs
    give one donut each, side by side.

    >>> op_donut(run_query("op_share", ["run.parquet"]), "decode")  # doctest: +SKIP
    """
    _require(df, ["phase", "op", "kernel_ms", "share_pct"], "operator donut")
    sub = df[df["phase"] == phase]
    if sub.empty:
        raise TracekitError(
            f"There is no phase {phase!r} to draw; the table has {', '.join(map(str, _order(df['phase'])))}."
        )
    by = [c for c in ("run", "phase") if c in sub.columns]
    data, order = _top(sub, "op", "kernel_ms", by, top, keep_last=["(no op)"])
    data["label"] = np.where(
        data["share_pct"] >= MIN_LABEL_PCT,
        data["share_pct"].round(0).astype(int).astype(str) + "%",
        "",
    )
    rank = {k: i for i, k in enumerate(order)}
    data["slice"] = data["op"].map(rank)
    base = alt.Chart(data).encode(
        theta=alt.Theta("share_pct:Q", stack=True),
        order=alt.Order("slice:Q"),
    )
    arcs = base.mark_arc(innerRadius=55, outerRadius=100, stroke="white").encode(
        color=alt.Color(
            "op:N",
            title="operator",
            sort=order,
            scale=alt.Scale(scheme="tableau20"),
            legend=alt.Legend(labelLimit=220),
        ),
        tooltip=[
            alt.Tooltip("op:N", title="operator"),
            alt.Tooltip("share_pct:Q", title="share of phase (%)", format=".1f"),
            alt.Tooltip("kernel_ms:Q", title="kernel time (ms)", format=",.3f"),
        ],
    )
    text = base.mark_text(radius=118, fontSize=11).encode(text="label:N")
    donut = alt.layer(arcs, text).properties(width=250, height=250)
    title = f"{phase}: operator share of kernel time"
    runs = _order(data["run"]) if "run" in data.columns else []
    if len(runs) > 1:
        return donut.facet(column=alt.Column("run:N", sort=runs, title=None)).properties(
            title=title
        )
    return donut.properties(title=title)


def phase_split(df: pd.DataFrame, *, measure: str = "gpu_busy_ms") -> Chart:
    """How each rank's GPU time splits over phases: stacked bars per rank.

    ``df`` is the ``phase_breakdown`` query result (``run``, ``rank``, ``phase``,
    ``steps``, ``gpu_busy_ms``, ``kernel_ms``, ``wall_ms_mean``, ``comm_pct`` ...).
    ``measure`` is the column stacked: ``gpu_busy_ms`` (union of intervals, the
    default) or ``kernel_ms`` (sum of durations).

    >>> phase_split(run_query("phase_breakdown", ["run.parquet"]))  # doctest: +SKIP
    """
    titles = {
        "gpu_busy_ms": "GPU busy time (ms, union of activity intervals)",
        "kernel_ms": "kernel time (ms, sum of dur_ns)",
    }
    if measure not in titles:
        raise TracekitError(f"phase_split measures gpu_busy_ms or kernel_ms, not {measure!r}.")
    _require(df, ["rank", "phase", measure], "phase split")
    data = df.copy()
    runs = _order(data["run"]) if "run" in data.columns else []
    prefix = data["run"].astype(str) + " · " if len(runs) > 1 else ""
    data["who"] = prefix + "rank " + data["rank"].astype("Int64").astype(str)
    data[measure] = data[measure].fillna(0)
    total = data.groupby("who", sort=False)[measure].transform("sum")
    data["share_pct"] = (100 * data[measure] / total.where(total > 0)).round(2)
    phases = _order(data["phase"])
    data = _stack(data, ["who"], "phase", phases, measure)
    pct = data["share_pct"].round(0).astype("Int64").astype(str) + "%"
    # Wide segments name their phase; narrow ones only give the share.
    data["label"] = np.select(
        [data["share_pct"] >= 20, data["share_pct"] >= MIN_LABEL_PCT],
        [data["phase"].astype(str) + " " + pct, pct],
        "",
    )
    extra = [
        alt.Tooltip(f"{c}:Q", title=t, format=f)
        for c, t, f in (
            ("steps", "steps", ","),
            ("wall_ms_mean", "wall time per step, mean (ms)", ",.3f"),
            ("kernel_ms", "kernel time (ms)", ",.3f"),
            ("comm_pct", "communication (% of kernel time)", ".1f"),
            ("gpu_idle_pct", "GPU idle inside steps (%)", ".1f"),
        )
        if c in data.columns and c != measure
    ]
    base = alt.Chart(data).encode(y=alt.Y("who:N", sort=_order(data["who"]), title=None))
    bars = base.mark_bar(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("x0:Q", title=titles[measure]),
        x2="x1:Q",
        color=alt.Color("phase:N", sort=phases, title="phase", scale=alt.Scale(scheme="set2")),
        tooltip=[
            alt.Tooltip("who:N", title="rank"),
            alt.Tooltip("phase:N"),
            alt.Tooltip(f"{measure}:Q", title=titles[measure], format=",.3f"),
            alt.Tooltip("share_pct:Q", title="share of the rank (%)", format=".1f"),
            *extra,
        ],
    )
    labels = base.mark_text(color="black", fontSize=10).encode(x="mid:Q", text="label:N")
    return alt.layer(bars, labels).properties(
        width=WIDTH, height=alt.Step(28), title="Phase split of GPU time per rank"
    )


def step_latency(df: pd.DataFrame) -> Chart:
    """Step latency over time, per phase and rank, with the batch size underneath.

    ``df`` is the ``step_series`` query result: ``rank``, ``phase``, ``step``,
    ``start_s``, ``wall_ms``, ``gpu_span_ms``, ``batch_size`` (optional).  Latency is
    the wall time of the step range; steps without a range show their GPU span.

    >>> step_latency(run_query("step_series", ["run.parquet"]))  # doctest: +SKIP
    """
    _require(df, ["rank", "phase", "step", "start_s", "wall_ms", "gpu_span_ms"], "step latency")
    data = df.copy()
    has_wall = data["wall_ms"].notna()
    data["latency_ms"] = data["wall_ms"].where(has_wall, data["gpu_span_ms"])
    data["latency_is"] = np.where(has_wall, "wall time (step range)", "GPU span")
    data["series"] = (
        data["phase"].astype(str) + " · rank " + data["rank"].astype("Int64").astype(str)
    )
    if "run" in data.columns and data["run"].nunique() > 1:
        data["series"] = data["run"].astype(str) + " · " + data["series"]
    data = data[data["latency_ms"].notna()]
    if data.empty:
        raise TracekitError("The step latency chart found no step with a wall time or GPU span.")
    phases = _order(data["phase"])
    color = alt.Color("phase:N", sort=phases, title="phase", scale=alt.Scale(scheme="set2"))
    tooltip = [
        alt.Tooltip("series:N", title="phase · rank"),
        alt.Tooltip("step:Q"),
        alt.Tooltip("start_s:Q", title="start (s)", format=",.4f"),
        alt.Tooltip("latency_ms:Q", title="latency (ms)", format=",.3f"),
        alt.Tooltip("latency_is:N", title="latency is"),
    ]
    has_batch = "batch_size" in data.columns and data["batch_size"].notna().any()
    if has_batch:
        tooltip.append(alt.Tooltip("batch_size:Q", title="batch size"))
    x = alt.X("start_s:Q", title="time since the run's first event (s)")
    latency = (
        alt.Chart(data)
        .mark_line(point=alt.OverlayMarkDef(size=18), strokeWidth=1)
        .encode(
            x=x,
            y=alt.Y("latency_ms:Q", title="step latency (ms)", scale=alt.Scale(zero=False)),
            color=color,
            detail="series:N",
            tooltip=tooltip,
        )
        .properties(width=WIDTH + 120, height=240, title="Step latency over time")
    )
    if not has_batch:
        return latency
    batch = (
        alt.Chart(data[data["batch_size"].notna()])
        .mark_line(interpolate="step-after", strokeWidth=1.5)
        .encode(
            x=x,
            y=alt.Y("batch_size:Q", title="batch size"),
            color=color,
            detail="series:N",
            tooltip=tooltip,
        )
        .properties(width=WIDTH + 120, height=110)
    )
    return alt.vconcat(latency, batch).resolve_scale(x="shared")


def comm_transfer_wait(df: pd.DataFrame, *, facet: str | None = "phase") -> Chart:
    """Communication per rank split into transfer and wait-for-the-slowest-rank.

    ``df`` is :func:`tracekit.comm.comm_table` by ``rank`` (the ``comm_by_rank``
    query): ``rank``, ``transfer_ms``, ``wait_ms`` and optionally ``run``, ``phase``,
    ``exposed_ms``, ``skew_ms``.  Transfer is a collective's shortest duration over
    ranks; wait is the rest of each rank's duration.  With several values of
    ``facet`` (default ``phase``) there is one row of bars per value.

    >>> comm_transfer_wait(comm_table(["tp2.parquet"], by="rank"))  # doctest: +SKIP
    """
    _require(df, ["rank", "transfer_ms", "wait_ms"], "communication transfer/wait")
    facet = facet if facet in df.columns and df[facet].nunique() > 1 else None
    keys = [c for c in ("run", facet) if c is not None and c in df.columns]
    extra = [c for c in ("total_ms", "exposed_ms", "skew_ms", "last_arrivals") if c in df.columns]
    data = df[[*keys, "rank", "transfer_ms", "wait_ms", *extra]].sort_values(
        [*(k for k in keys if k != facet), "rank"], kind="stable"
    )
    data["who"] = "rank " + data["rank"].astype("Int64").astype(str)
    if "run" in data.columns and data["run"].nunique() > 1:
        data["who"] = data["run"].astype(str) + " · " + data["who"]
    long = data.melt(
        id_vars=[*keys, "who", "rank", *extra],
        value_vars=["transfer_ms", "wait_ms"],
        var_name="part",
        value_name="ms",
    )
    long["part"] = long["part"].str.removesuffix("_ms")
    group = [*(k for k in keys if k != "run"), "who"]
    total = long.groupby(group, sort=False)["ms"].transform("sum")
    long["share_pct"] = (100 * long["ms"] / total.where(total > 0)).round(1)
    titles = {
        "total_ms": "communication kernel time (ms)",
        "exposed_ms": "exposed: not overlapped by compute (ms)",
        "skew_ms": "arrival skew (ms)",
        "last_arrivals": "collectives it arrived last at",
    }
    tooltip = [
        alt.Tooltip("who:N", title="rank"),
        *([alt.Tooltip(f"{facet}:N")] if facet else []),
        alt.Tooltip("part:N"),
        alt.Tooltip("ms:Q", title="time (ms)", format=",.3f"),
        alt.Tooltip("share_pct:Q", title="share of the rank's communication (%)", format=".1f"),
        *(alt.Tooltip(f"{c}:Q", title=titles[c], format=",.3f") for c in extra),
    ]
    chart = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("who:N", sort=_order(long["who"]), title=None),
            x=alt.X("ms:Q", stack="zero", title="communication kernel time (ms, sum of dur_ns)"),
            color=alt.Color(
                "part:N",
                title=None,
                sort=list(COMM_COLORS),
                scale=alt.Scale(domain=list(COMM_COLORS), range=list(COMM_COLORS.values())),
            ),
            order=alt.Order("part:N", sort="ascending"),
            tooltip=tooltip,
        )
        .properties(width=WIDTH, height=alt.Step(22))
    )
    title = "Communication: transfer vs waiting for the slowest rank"
    if facet:
        return chart.facet(
            row=alt.Row(f"{facet}:N", sort=_order(long[facet]), title=None)
        ).properties(title=title)
    return chart.properties(title=title)


def compare_ops(
    df: pd.DataFrame,
    *,
    a_label: str = "A",
    b_label: str = "B",
    what: str = "operator",
    top: int = 12,
) -> Chart:
    """Time per step on two sides, per phase and operator (or category), as grouped bars.

    ``df`` has ``phase``, ``name``, ``a_ms_per_step``, ``b_ms_per_step``, ``ratio``
    (B/A) and ``predicted_ratio`` (what the hardware predicts, may be NULL); optional
    ``unit`` (step, token or run: what "per" means in that phase) and ``noise`` (True
    where the difference lies inside the repeat-to-repeat spread).  The label gives
    the measured ratio and the predicted one; a black tick marks A × predicted ratio,
    where B would be if it scaled as the hardware predicts.  The ``top`` names per
    phase by the larger side are drawn.

    >>> compare_ops(compare_frame(compare([a], [b]), "op"), a_label="a100", b_label="h100")  # doctest: +SKIP
    """
    _require(
        df,
        ["phase", "name", "a_ms_per_step", "b_ms_per_step", "ratio", "predicted_ratio"],
        "comparison",
    )
    data = df.copy()
    data["peak_ms"] = data[["a_ms_per_step", "b_ms_per_step"]].max(axis=1)
    data["_phase"] = data["phase"].map(_rank(df["phase"]))
    data = data.sort_values(["_phase", "peak_ms"], ascending=[True, False], kind="stable")
    data = data[data.groupby("_phase", sort=False).cumcount() < top].drop(columns="_phase")
    data["predicted_b_ms"] = data["a_ms_per_step"] * data["predicted_ratio"]
    data["label"] = _fmt(data["ratio"], "×%.2f") + _fmt(data["predicted_ratio"], " (pred ×%.2f)")
    if "noise" in data.columns:
        noise = data["noise"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        data["label"] = data["label"] + np.where(noise, ", in noise", "")
    units = data["unit"].fillna("run").astype(str) if "unit" in data.columns else None
    data["panel"] = data["phase"].astype(str)
    if units is not None:
        data["panel"] = data["panel"] + " (per " + units + ")"
    per = "step" if units is None or set(units) == {"step"} else "unit"
    panels = _order(data["panel"])
    sides = [a_label, b_label]
    # One long table (a row per name and side) feeds every layer, so the faceted
    # scales come from a single data source; ticks and labels sit on B's bar.
    keep = ["panel", "phase", "name", "peak_ms", "ratio", "predicted_ratio"]
    long = pd.concat(
        [
            data[keep].assign(side=a_label, ms=data["a_ms_per_step"], pred_ms=np.nan, text=""),
            data[keep].assign(
                side=b_label,
                ms=data["b_ms_per_step"],
                pred_ms=data["predicted_b_ms"],
                text=data["label"],
            ),
        ],
        ignore_index=True,
    )
    # The label starts right of B's bar and of its tick, whichever ends later.
    long["text_x"] = long[["ms", "pred_ms"]].max(axis=1)
    tooltip = [
        alt.Tooltip("panel:N", title="phase"),
        alt.Tooltip("name:N", title=what),
        alt.Tooltip("side:N", title="run"),
        alt.Tooltip("ms:Q", title=f"kernel time (ms per {per})", format=",.4f"),
        alt.Tooltip("ratio:Q", title=f"measured {b_label} / {a_label}", format=".3f"),
        alt.Tooltip("predicted_ratio:Q", title="predicted ratio", format=".3f"),
        alt.Tooltip("pred_ms:Q", title=f"{b_label} as predicted (ms)", format=",.4f"),
    ]
    color = alt.Color(
        "side:N",
        title=None,
        sort=sides,
        scale=alt.Scale(domain=sides, range=["#4c78a8", "#f58518"]),
    )

    def panel(sub: pd.DataFrame, title: str) -> Chart:
        # A concatenation of one chart per phase rather than a facet: a facet with
        # independent scales over layers warns in Vega-Lite and may size wrongly.
        base = alt.Chart(sub).encode(
            y=alt.Y("name:N", sort=None, title=None, axis=alt.Axis(labelLimit=220)),
            yOffset=alt.YOffset("side:N", sort=sides, scale=alt.Scale(domain=sides)),
            tooltip=tooltip,
        )
        bars = base.mark_bar().encode(
            x=alt.X("ms:Q", title=f"kernel time per {per} (ms)"), color=color
        )
        ticks = base.mark_tick(color="black", thickness=2.5, size=12).encode(x="pred_ms:Q")
        labels = base.mark_text(align="left", dx=4, fontSize=10).encode(x="text_x:Q", text="text:N")
        return alt.layer(bars, ticks, labels).properties(
            width=WIDTH,
            height=alt.Step(28),
            title=alt.TitleParams(title, anchor="start", fontSize=12),
        )

    # Rows are already biggest first within each phase (the y order is data order).
    parts = [panel(long[long["panel"] == p], str(p)) for p in panels]
    return alt.vconcat(*parts).properties(
        title=alt.TitleParams(
            f"{b_label} vs {a_label}: kernel time per {per}, per {what}",
            subtitle=f"label: measured ratio {b_label}/{a_label} (predicted ratio); "
            f"black tick: where {b_label} would be if it scaled as the hardware predicts",
        )
    )


def _rank(values: pd.Series) -> dict[Any, int]:
    return {v: i for i, v in enumerate(_order(values))}


def _fmt(values: pd.Series, pattern: str) -> pd.Series:
    """``pattern % value`` for every non-null value, "" for nulls (vectorised)."""
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    text = np.char.mod(pattern, np.nan_to_num(x))
    return pd.Series(np.where(np.isnan(x), "", text), index=values.index)


