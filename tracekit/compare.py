"""``tracekit compare``: two deployments, phase by phase and operator by operator,
against what the hardware predicts.

Each side (A, B) is one run or several repeated runs (one Parquet file each). For
every phase and every group of a level (``phase`` = the whole phase, ``category``,
``op``, ``kernel`` = short name, ``name`` = full kernel name) the comparison gives,
per side:

- **kernel time** per unit: sum of ``dur_ns`` of the group's GPU activities
  (kernels, memcpy, memset), and **busy time** per unit: the length of the union of
  those intervals per device (streams overlap, so kernel time can exceed busy time);
- **share** of the phase's kernel time;
- over repeats: the mean, and the **spread** ``(max - min) / mean``.

**Units.** ``per="step"``: divided by the phase's steps (the phase/step range
instances that launched GPU work); ``per="token"``: by the tokens those steps carry
(column ``tokens``); a phase without steps (unattributed work, or ``phases=False``)
is counted ``per run``. **Ranks.** ``ranks="mean"`` (default) gives one rank's time:
the sum over ranks divided by the rank-steps (``count`` of distinct (rank, step)), so
runs with different TP degrees compare GPU by GPU; ``ranks="sum"`` gives the time
summed over ranks per step (total GPU time, the cost view).

**Ratio** is B/A of the mean per-unit values: above 1 means B takes longer. A
difference is **inside the noise** when the sides' repeat ranges [min, max] overlap
(needs at least one side with two or more repeats; otherwise it is unknown).

**Prediction.** Every (phase, category) is bound by one resource: GEMMs by compute
(dense tensor TFLOP/s) except in decode, where they and everything else that is
not communication are bound by memory bandwidth; prefill attention by compute;
norm, elementwise, reduce and memory work by memory bandwidth; communication by
the GPU-to-GPU link (NVLink/Infinity Fabric, else PCIe); ``other`` and GEMM/attention
of ``mixed`` or unknown phases get no prediction. The predicted B/A time ratio is
``capacity_A / capacity_B``, times the change in work per rank when the TP degrees
differ (GEMM and attention are split over ranks: ``1/tp``; a ring all-reduce moves
``2(tp-1)/tp`` of the message per rank; the rest is replicated), times
``tp_B/tp_A`` with ``ranks="sum"``. A row that mixes categories (a phase, an op)
gets A's mix re-timed on B: ``sum_c A_c * r_c / sum_c A_c`` over the categories with
a prediction (``pred_cover`` says how much of A's time that is). ``deviation`` is
measured/predicted: above 1 means B is slower than the hardware predicts.

>>> res = compare([Path("h100.parquet")], [Path("h200.parquet")])  # doctest: +SKIP
>>> res.verdicts.verdict.tolist()  # doctest: +SKIP
['decode: B takes 0.71x the kernel time per step of A; ...']
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from tracekit.errors import TracekitError
from tracekit.gpus import GPU, bound_resource, lookup, predicted_ratio
from tracekit.ingest import read_metadata

LEVELS = ("phase", "category", "op", "kernel", "name")
DEFAULT_LEVELS = ("phase", "category", "op")
PER = ("step", "token")
RANKS = ("mean", "sum")

_MEASURE_SQL = """
with g as (
    select filename as f, rank, device,
           case when $phases then coalesce(phase, '(unattributed)') else '(all)' end as phase,
           case when $phases then step end as step,
           tokens,
           coalesce(category, 'other') as category,
           coalesce(op, '(no op)') as op,
           coalesce(short_name, name) as kernel,
           name, start_ns, end_ns, dur_ns
    from read_parquet($files, filename = true)
    where kind in ('kernel', 'memcpy', 'memset')
),
lv as (
    select f, rank, device, phase, category, 'phase' as level, '(all)' as key,
           start_ns, end_ns, dur_ns from g
    union all
    select f, rank, device, phase, category, 'category', category, start_ns, end_ns, dur_ns from g
    union all
    select f, rank, device, phase, category, 'op', op, start_ns, end_ns, dur_ns from g
    union all
    select f, rank, device, phase, category, 'kernel', kernel, start_ns, end_ns, dur_ns from g
    union all
    select f, rank, device, phase, category, 'name', name, start_ns, end_ns, dur_ns from g
),
sel as (select * from lv where list_contains($levels, level)),
kt as (
    select f, phase, level, key, category, sum(dur_ns) as kernel_ns, count(*) as events
    from sel group by all
),
ordered as (
    select f, phase, level, key, rank, device, start_ns, end_ns,
           max(end_ns) over (
               partition by f, phase, level, key, rank, device
               order by start_ns, end_ns
               rows between unbounded preceding and 1 preceding) as prev_end
    from sel
),
islands as (
    select *, sum(case when prev_end is null or start_ns > prev_end then 1 else 0 end) over (
               partition by f, phase, level, key, rank, device
               order by start_ns, end_ns rows unbounded preceding) as island
    from ordered
),
busy as (
    select f, phase, level, key, sum(e - s) as busy_ns from (
        select f, phase, level, key, rank, device, island,
               min(start_ns) as s, max(end_ns) as e
        from islands group by all
    ) group by all
)
select kt.f, kt.phase, kt.level, kt.key, kt.category, kt.kernel_ns, kt.events, busy.busy_ns
from kt join busy using (f, phase, level, key)
"""

_UNITS_SQL = """
with g as (
    select filename as f, rank,
           case when $phases then coalesce(phase, '(unattributed)') else '(all)' end as phase,
           case when $phases then step end as step, tokens
    from read_parquet($files, filename = true)
    where kind in ('kernel', 'memcpy', 'memset')
),
rs as (select f, phase, rank, step, max(tokens) as tokens from g group by all)
select f, phase, count(distinct rank) as n_ranks, count(step) as n_rank_steps,
       sum(tokens) filter (where step is not null) as tokens,
       count(tokens) filter (where step is not null) as n_tok
from rs group by all
"""


@dataclass
class Side:
    """One side of a comparison: its runs and the hardware they ran on."""

    label: str
    files: list[str]
    gpu: GPU | None
    gpu_models: list[str]
    tp: int
    ranks: int

    def to_dict(self) -> dict[str, Any]:
        g = self.gpu
        return {
            "label": self.label,
            "files": self.files,
            "repeats": len(self.files),
            "gpu_models": self.gpu_models,
            "gpu": None
            if g is None
            else {
                "key": g.key,
                "name": g.name,
                "bf16_tflops": g.bf16_tflops,
                "fp16_tflops": g.fp16_tflops,
                "mem_bw_gbps": g.mem_bw_gbps,
                "link": g.link,
                "link_gbps": g.link_gbps,
                "pcie_gbps": g.pcie_gbps,
                "devices_per_package": g.devices_per_package,
                "source": g.source,
            },
            "tp": self.tp,
            "ranks": self.ranks,
        }


@dataclass
class CompareResult:
    """What :func:`compare` returns: one row per (phase, level, key), one verdict per phase.

    ``rows`` columns: phase, level, key, unit, steps_a/b (steps per rank, mean over
    repeats), kernel_a/b and busy_a/b (ns per unit, mean over repeats), kernel_a_min/max,
    kernel_b_min/max, share_a/b (of the phase's kernel time), ratio and busy_ratio (B/A),
    spread_a/b ((max-min)/mean of kernel time over repeats), noise (True: inside the
    repeat-to-repeat noise; None: unknown), bound (compute, memory, interconnect,
    mixed), predicted (B/A), pred_cover, deviation (ratio / predicted).
    """

    a: Side
    b: Side
    rows: pd.DataFrame
    verdicts: pd.DataFrame
    per: str
    ranks: str
    dtype: str
    tolerance: float
    notes: list[str] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        """Operator and category rows in the shape ``tracekit.report`` and
        ``charts.compare_ops`` draw: phase, kind, name, a_ms_per_step, b_ms_per_step
        (ms per the row's unit), ratio, predicted_ratio, noise, bound, a_run, b_run."""
        r = self.rows[self.rows["level"].isin(["op", "category"])]
        return pd.DataFrame(
            {
                "phase": r["phase"],
                "kind": r["level"],
                "name": r["key"],
                "unit": r["unit"],
                "a_ms_per_step": r["kernel_a"] / 1e6,
                "b_ms_per_step": r["kernel_b"] / 1e6,
                "ratio": r["ratio"],
                "predicted_ratio": r["predicted"],
                "deviation": r["deviation"],
                "noise": r["noise"],
                "bound": r["bound"],
                "a_run": self.a.label,
                "b_run": self.b.label,
            }
        ).reset_index(drop=True)

    @property
    def a_label(self) -> str:
        return self.a.label

    @property
    def b_label(self) -> str:
        return self.b.label

    def to_dict(self) -> dict[str, Any]:
        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = json.loads(
                df.to_json(orient="records", double_precision=15)
            )
            return out

        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "normalisation": {"per": self.per, "ranks": self.ranks},
            "ratio": "B/A (above 1: B takes longer)",
            "time_unit": "ns per unit (see each row's unit)",
            "dtype": self.dtype,
            "tolerance": self.tolerance,
            "notes": self.notes,
            "verdicts": records(self.verdicts),
            "rows": records(self.rows),
        }


def expand_runs(items: Sequence[str | Path]) -> list[Path]:
    """Files named, with glob patterns expanded (sorted); a clear error for none."""
    out: list[Path] = []
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_file():
            out.append(p)
            continue
        if any(c in s for c in "*?["):
            hits = sorted(Path(h) for h in glob.glob(s) if Path(h).is_file())
            if not hits:
                raise TracekitError(f"No run file matches {s}.")
            out.extend(hits)
            continue
        raise TracekitError(f"Run file {s} does not exist.")
    return out


def _side(
    paths: Sequence[Path],
    label: str | None,
    gpu: str | None,
    flag: str,
    predict: bool,
    tp: int | None,
) -> Side:
    if not paths:
        raise TracekitError(f"Side {flag[-1].upper()} has no run files.")
    metas = [read_metadata(p) for p in paths]
    models = sorted({m for md in metas for m in (md.get("gpus") or {}).values() if m})
    world: set[int] = {int(md["world_size"]) for md in metas if md.get("world_size") is not None}
    ranks = {len(md.get("ranks") or []) for md in metas}
    if len(world) > 1:
        raise TracekitError(
            f"The repeats of side {flag[-1].upper()} have different world sizes ({sorted(world)}); "
            "repeats must be runs of the same deployment."
        )
    if tp is None:
        tp = next(iter(world)) if world else max(ranks or {1})
    elif tp < 1:
        raise TracekitError(f"The TP degree must be 1 or more, not {tp}.")
    chosen: GPU | None = None
    if gpu:
        chosen = lookup(gpu, flag)
    elif predict:
        if not models:
            raise TracekitError(
                f"{paths[0]} records no GPU model; name it with {flag} (e.g. {flag} 'H100 SXM'), "
                "or compare without the hardware prediction (--no-predict)."
            )
        found = {lookup(m, flag).key: lookup(m, flag) for m in models}
        if len(found) > 1:
            raise TracekitError(
                f"Side {flag[-1].upper()} ran on different GPU models ({', '.join(models)}); "
                f"say which one to predict for with {flag}."
            )
        chosen = next(iter(found.values()))
    name = label or str(metas[0].get("run") or paths[0].stem)
    return Side(name, [str(p) for p in paths], chosen, models, tp, max(ranks or {0}))


def _measure(
    con: duckdb.DuckDBPyConnection, files: list[str], levels: Sequence[str], phases: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    params: dict[str, Any] = {"files": files, "levels": list(levels), "phases": phases}
    kt = con.execute(_MEASURE_SQL, params).df()
    units = con.execute(_UNITS_SQL, {"files": files, "phases": phases}).df()
    return kt, units


def _divisors(units: pd.DataFrame, unit_of: dict[str, str], ranks: str) -> pd.DataFrame:
    """Per (f, phase): the divisor of the chosen unit, and steps per rank."""
    u = units.copy()
    unit = u["phase"].map(unit_of)
    base = np.select(
        [unit == "step", unit == "token"],
        [u["n_rank_steps"].astype(float), u["tokens"].astype(float)],
        u["n_ranks"].astype(float),
    )
    if ranks == "sum":
        base = base / u["n_ranks"].astype(float)
    u["div"] = base
    u["steps"] = np.where(u["n_rank_steps"] > 0, u["n_rank_steps"] / u["n_ranks"], 1.0)
    return u[["f", "phase", "div", "steps"]]


def _per_unit(kt: pd.DataFrame, div: pd.DataFrame) -> pd.DataFrame:
    """Kernel and busy time per (f, phase, level, key), divided by the phase's units."""
    tot = kt.groupby(["f", "phase", "level", "key"], as_index=False).agg(
        kernel_ns=("kernel_ns", "sum"), busy_ns=("busy_ns", "first")
    )
    out = tot.merge(div, on=["f", "phase"], how="left")
    out["kernel"] = out["kernel_ns"] / out["div"]
    out["busy"] = out["busy_ns"] / out["div"]
    return out


def _over_repeats(
    pu: pd.DataFrame, files: list[str], keys: pd.DataFrame, prefix: str
) -> pd.DataFrame:
    """Mean/min/max over repeats; a group absent from a repeat that has its phase counts 0."""
    phases = pu[["f", "phase", "steps"]].drop_duplicates()
    grid = keys.merge(phases, on="phase")  # only repeats where the phase exists
    g = grid.merge(
        pu[["f", "phase", "level", "key", "kernel", "busy"]],
        on=["f", "phase", "level", "key"],
        how="left",
    )
    g[["kernel", "busy"]] = g[["kernel", "busy"]].fillna(0.0)
    agg = g.groupby(["phase", "level", "key"], as_index=False).agg(
        kernel=("kernel", "mean"),
        kernel_min=("kernel", "min"),
        kernel_max=("kernel", "max"),
        busy=("busy", "mean"),
        n=("f", "nunique"),
        steps=("steps", "mean"),
    )
    spread = (agg["kernel_max"] - agg["kernel_min"]) / agg["kernel"]
    agg["spread"] = np.where((agg["n"] >= 2) & (agg["kernel"] > 0), spread, np.nan)
    return agg.rename(
        columns={
            c: f"{c}_{prefix}" if c not in ("phase", "level", "key") else c for c in agg.columns
        }
    )


def _mix(kt: pd.DataFrame, div: pd.DataFrame) -> pd.DataFrame:
    """A's kernel time per unit by (phase, level, key, category), mean over repeats."""
    m = kt.merge(div, on=["f", "phase"], how="left")
    m["kernel"] = m["kernel_ns"] / m["div"]
    out = m.groupby(["phase", "level", "key", "category"], as_index=False)["kernel"].sum()
    # A phase missing from a repeat is no evidence of zero time: average over the
    # repeats that have the phase.
    n = div.groupby("phase")["f"].nunique()
    out["kernel"] = out["kernel"] / out["phase"].map(n)
    return out


def _unit_choice(ua: pd.DataFrame, ub: pd.DataFrame, per: str, notes: list[str]) -> dict[str, str]:
    both = pd.concat([ua, ub])
    out: dict[str, str] = {}
    for phase, grp in both.groupby("phase"):
        has_steps = bool((grp["n_rank_steps"] > 0).all())
        has_tokens = bool(((grp["n_tok"] == grp["n_rank_steps"]) & (grp["n_rank_steps"] > 0)).all())
        if per == "token" and has_tokens:
            out[str(phase)] = "token"
        elif has_steps:
            out[str(phase)] = "step"
            if per == "token":
                notes.append(
                    f"Phase {phase}: steps carry no token counts on both sides; compared per step."
                )
        else:
            out[str(phase)] = "run"
    return out


def compare(
    a_paths: Sequence[str | Path],
    b_paths: Sequence[str | Path],
    *,
    label_a: str | None = None,
    label_b: str | None = None,
    gpu_a: str | None = None,
    gpu_b: str | None = None,
    tp_a: int | None = None,
    tp_b: int | None = None,
    levels: Sequence[str] = DEFAULT_LEVELS,
    per: str = "step",
    ranks: str = "mean",
    phases: bool = True,
    predict: bool = True,
    dtype: str = "bf16",
    tolerance: float = 0.10,
) -> CompareResult:
    """Compare side A (one run or repeats) with side B, per phase and level.

    >>> r = compare(["a100_*.parquet"], ["a40_*.parquet"], levels=["phase", "op"])  # doctest: +SKIP
    >>> r.rows.query("level == 'op'")[["phase", "key", "ratio", "predicted"]]  # doctest: +SKIP
    """
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise TracekitError(f"Unknown level {bad[0]!r}; use some of {', '.join(LEVELS)}.")
    if per not in PER:
        raise TracekitError(f"Unknown unit {per!r}; use step or token.")
    if ranks not in RANKS:
        raise TracekitError(f"Unknown rank normalisation {ranks!r}; use mean or sum.")
    levels = ["phase", *[lv for lv in levels if lv != "phase"]]
    fa, fb = expand_runs(a_paths), expand_runs(b_paths)
    a = _side(fa, label_a, gpu_a, "--gpu-a", predict, tp_a)
    b = _side(fb, label_b, gpu_b, "--gpu-b", predict, tp_b)
    if a.label == b.label:
        a.label, b.label = f"{a.label} (A)", f"{b.label} (B)"
    notes: list[str] = []
    if (
        a.gpu
        and b.gpu
        and dtype == "bf16"
        and (a.gpu.bf16_tflops is None or b.gpu.bf16_tflops is None)
    ):
        dtype = "fp16"
        notes.append(
            "One GPU has no bf16 tensor cores; compute predictions use the fp16 figures of both."
        )
    if a.tp != b.tp:
        notes.append(
            f"TP degrees differ (A {a.tp}, B {b.tp}): times are "
            + ("per rank (mean over ranks)." if ranks == "mean" else "summed over ranks.")
        )

    con = duckdb.connect()
    kta, ua = _measure(con, a.files, levels, phases)
    ktb, ub = _measure(con, b.files, levels, phases)
    unit_of = _unit_choice(ua, ub, per, notes)
    da, db = _divisors(ua, unit_of, ranks), _divisors(ub, unit_of, ranks)
    pua, pub = _per_unit(kta, da), _per_unit(ktb, db)
    keys = pd.concat([pua, pub])[["phase", "level", "key"]].drop_duplicates()
    sa = _over_repeats(pua, a.files, keys, "a")
    sb = _over_repeats(pub, b.files, keys, "b")
    rows = keys.merge(sa, on=["phase", "level", "key"], how="left").merge(
        sb, on=["phase", "level", "key"], how="left"
    )
    rows["unit"] = rows["phase"].map(unit_of)
    for s in ("a", "b"):
        total = rows[rows["level"] == "phase"].set_index("phase")[f"kernel_{s}"]
        rows[f"share_{s}"] = rows[f"kernel_{s}"] / rows["phase"].map(total)
    rows["ratio"] = rows["kernel_b"] / rows["kernel_a"]
    rows["busy_ratio"] = rows["busy_b"] / rows["busy_a"]
    rows.loc[rows["kernel_a"] <= 0, ["ratio"]] = np.nan
    rows.loc[rows["busy_a"] <= 0, ["busy_ratio"]] = np.nan
    rows = rows.replace([np.inf, -np.inf], np.nan)
    repeats = (rows["n_a"].fillna(0) >= 2) | (rows["n_b"].fillna(0) >= 2)
    overlap = np.maximum(rows["kernel_min_a"], rows["kernel_min_b"]) <= np.minimum(
        rows["kernel_max_a"], rows["kernel_max_b"]
    )
    rows["noise"] = pd.Series(np.where(repeats, overlap, None), index=rows.index, dtype=object)

    # Hardware prediction: A's category mix re-timed on B.
    mix = _mix(kta, da)
    cats = mix[["phase", "category"]].drop_duplicates()
    cats["r"] = [
        predicted_ratio(p, c, a.gpu, b.gpu, a.tp, b.tp, dtype, ranks)
        for p, c in zip(cats["phase"], cats["category"], strict=True)
    ]
    cats["resource"] = [
        bound_resource(p, c) for p, c in zip(cats["phase"], cats["category"], strict=True)
    ]
    mix = mix.merge(cats, on=["phase", "category"])
    mix["has"] = mix["r"].notna()
    mix["wr"] = np.where(mix["has"], mix["kernel"] * mix["r"].fillna(0.0), 0.0)
    mix["wk"] = np.where(mix["has"], mix["kernel"], 0.0)
    pred = mix.groupby(["phase", "level", "key"], as_index=False).agg(
        wr=("wr", "sum"),
        wk=("wk", "sum"),
        tot=("kernel", "sum"),
        bound=(
            "resource",
            lambda s: (
                s.dropna().iloc[0]
                if s.dropna().nunique() == 1
                else ("mixed" if s.dropna().nunique() > 1 else None)
            ),
        ),
    )
    pred["predicted"] = np.where(
        pred["wk"] > 0, pred["wr"] / pred["wk"].where(pred["wk"] > 0, 1.0), np.nan
    )
    pred["pred_cover"] = np.where(
        pred["tot"] > 0, pred["wk"] / pred["tot"].where(pred["tot"] > 0, 1.0), np.nan
    )
    rows = rows.merge(
        pred[["phase", "level", "key", "bound", "predicted", "pred_cover"]],
        on=["phase", "level", "key"],
        how="left",
    )
    rows["deviation"] = rows["ratio"] / rows["predicted"]

    level_order = {lv: i for i, lv in enumerate(LEVELS)}
    rows["_lv"] = rows["level"].map(level_order)
    rows["_size"] = -rows[["kernel_a", "kernel_b"]].max(axis=1)
    rows = (
        rows.sort_values(["phase", "_lv", "_size", "key"])
        .drop(columns=["_lv", "_size"])
        .reset_index(drop=True)
    )
    cols = [
        "phase",
        "level",
        "key",
        "unit",
        "steps_a",
        "steps_b",
        "kernel_a",
        "kernel_b",
        "ratio",
        "busy_a",
        "busy_b",
        "busy_ratio",
        "share_a",
        "share_b",
        "n_a",
        "n_b",
        "kernel_min_a",
        "kernel_max_a",
        "kernel_min_b",
        "kernel_max_b",
        "spread_a",
        "spread_b",
        "noise",
        "bound",
        "predicted",
        "pred_cover",
        "deviation",
    ]
    rows = rows[cols]
    verdicts = _verdicts(rows, mix, tolerance, a, b)
    return CompareResult(a, b, rows, verdicts, per, ranks, dtype, tolerance, notes)


def _fmt_time(ns: float, unit: str) -> str:
    if unit == "token":
        return f"{ns / 1e3:.2f} us"
    return f"{ns / 1e6:.3f} ms"


def _verdicts(rows: pd.DataFrame, mix: pd.DataFrame, tol: float, a: Side, b: Side) -> pd.DataFrame:
    """One line per phase: measured ratio, prediction, and where any excess sits."""
    ph = rows[rows["level"] == "phase"]
    cat_b = rows[rows["level"] == "category"].set_index(["phase", "key"])["kernel_b"]
    out: list[tuple[Any, ...]] = []
    for r in ph.itertuples(index=False):
        unit = str(r.unit)
        ratio, predicted, dev = r.ratio, r.predicted, r.deviation
        if ratio is None or not math.isfinite(ratio):
            line = f"{r.phase}: only {'B' if r.kernel_b and r.kernel_b > 0 else 'A'} has GPU work in this phase."
            out.append((r.phase, line, ratio, predicted, dev, r.noise, None))
            continue
        head = (
            f"{r.phase}: B takes {ratio:.2f}x A's kernel time per {unit} "
            f"({_fmt_time(r.kernel_a, unit)} -> {_fmt_time(r.kernel_b, unit)})"
        )
        judgement = "the hardware prediction is unavailable"
        excess_cat = None
        if predicted is not None and math.isfinite(predicted):
            m = mix[(mix["phase"] == r.phase) & (mix["level"] == "category") & mix["has"]]
            if len(m):
                exp_b = m.set_index("key")["kernel"] * m.set_index("key")["r"]
                got_b = pd.Series(
                    [cat_b.get((r.phase, k), 0.0) for k in exp_b.index], index=exp_b.index
                )
                excess = got_b - exp_b
                excess_cat = (
                    str((excess if dev >= 1 else -excess).idxmax()) if len(excess) else None
                )
            if abs(dev - 1) <= tol:
                judgement = (
                    f"as the hardware predicts ({predicted:.2f}x; measured/predicted {dev:.2f})"
                )
            else:
                way = "slower" if dev > 1 else "faster"
                judgement = f"{way} than the hardware predicts ({predicted:.2f}x; measured/predicted {dev:.2f})"
                if excess_cat is not None:
                    judgement += f", most of the gap in {excess_cat}"
        if r.noise is True:
            judgement += "; the difference is inside the repeat-to-repeat noise"
        out.append((r.phase, f"{head}: {judgement}.", ratio, predicted, dev, r.noise, excess_cat))
    return pd.DataFrame(
        out,
        columns=["phase", "verdict", "ratio", "predicted", "deviation", "noise", "gap_category"],
    )
