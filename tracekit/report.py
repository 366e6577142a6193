"""The HTML report: one self-contained file with charts, their tables and run facts.

The file works offline: Vega, Vega-Lite and vega-embed are inlined from the bundle
that ``vl-convert-python`` ships (the same one Altair's ``save(inline=True)`` uses),
and every chart's data is inside its spec.  Tables are computed by the shipped SQL
queries (:mod:`tracekit.sql`) over the run's Parquet; charts come from
:mod:`tracekit.charts`.  This module and the CLI are the only places that write
files.

The page records its own health for tests and readers alike: a status line at the
bottom says how many charts rendered, and script errors, console errors and Vega
warnings are listed at the top (``#tk-status`` carries them as data attributes).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd

from tracekit import __version__, charts, sql
from tracekit.errors import TracekitError

#: Steps drawn in the latency chart at most; longer series are averaged over
#: consecutive steps (per run, rank and phase) so the file stays small.
MAX_STEP_POINTS = 4000
#: Donuts are drawn for this many phases at most (the ones with the most kernel time).
MAX_DONUTS = 3
#: Rows shown per table in the page (the whole table is in the chart's data).
MAX_TABLE_ROWS = 200
EXPORT_FORMATS = ("png", "svg")
#: What the inlined bundle exposes to the page's scripts.
BUNDLE_SNIPPET = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"


@dataclass
class Section:
    """One block of the report: a chart (or a note why there is none) and its table."""

    key: str
    title: str
    text: str = ""
    chart: charts.Chart | None = None
    table: pd.DataFrame | None = None
    note: str = ""
    columns: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- run report


def _reduce_steps(df: pd.DataFrame, limit: int = MAX_STEP_POINTS) -> tuple[pd.DataFrame, int]:
    """Average consecutive steps so at most about ``limit`` points remain."""
    if len(df) <= limit:
        return df, 1
    k = math.ceil(len(df) / limit)
    keys = ["run", "rank", "phase"]
    bucket = df.groupby(keys, sort=False).cumcount() // k
    numeric = [
        "start_s",
        "wall_ms",
        "gpu_span_ms",
        "gpu_busy_ms",
        "kernel_ms",
        "batch_size",
        "tokens",
    ]
    numeric = [c for c in numeric if c in df.columns]
    grouped = df.assign(_b=bucket).groupby([*keys, "_b"], sort=False)
    out = grouped[numeric].mean()
    out["step"] = grouped["step"].min()
    out = out.reset_index().drop(columns="_b")
    return out.sort_values(["run", "rank", "start_s"], kind="stable").reset_index(drop=True), k


def _query(con: Any, name: str) -> tuple[pd.DataFrame, dict[str, str]]:
    query = sql.load_query(name)
    return sql.execute(con, query), dict(query.columns)


def _comm_table(paths: Sequence[Path]) -> tuple[pd.DataFrame | None, str]:
    """Transfer and wait per rank and phase (:func:`tracekit.comm.comm_table`)."""
    from tracekit.comm import comm_table

    try:
        return comm_table(paths, "rank"), ""
    except TracekitError as exc:  # a run without communication kernels
        return None, f"{exc} Chart omitted."


def run_sections(parquet_paths: Sequence[Path]) -> list[Section]:
    """Compute every table of a run report and draw its charts (writes nothing).

    >>> [s.key for s in run_sections([Path("run.parquet")])]  # doctest: +SKIP
    ['phase_split', 'op_share', 'op_donut_decode', 'category_share', 'step_latency', 'comm']
    """
    con = sql.connect(parquet_paths)
    try:
        breakdown, bd_cols = _query(con, "phase_breakdown")
        ops, op_cols = _query(con, "op_share")
        cats, cat_cols = _query(con, "category_share")
        steps, step_cols = _query(con, "step_series")
    finally:
        con.close()

    sections: list[Section] = []
    split = Section(
        "phase_split",
        "Phase split",
        "GPU busy time (union of kernel, memcpy and memset intervals) per rank, split by "
        "the phase of the step that launched the work. Wall time per step is the step "
        "range on the CPU thread.",
        table=breakdown,
        columns=bd_cols,
    )
    if breakdown.empty:
        split.note = "No GPU activity in the run."
    else:
        split.chart = charts.phase_split(breakdown)
    sections.append(split)

    share = Section(
        "op_share",
        "Operator share per phase",
        "Kernel time (sum of kernel durations) per operator range, as a share of the "
        "phase; the largest operators are named, the rest lumped.",
        table=ops,
        columns=op_cols,
    )
    if ops.empty:
        share.note = "No kernels in the run."
    else:
        share.chart = charts.op_share(ops)
    sections.append(share)

    if not ops.empty:
        by_phase = ops.groupby("phase", sort=False)["kernel_ms"].sum().sort_values(ascending=False)
        named = [p for p in by_phase.index if p != "(no phase)"] or list(by_phase.index)
        for phase in named[:MAX_DONUTS]:
            sub = ops[ops["phase"] == phase]
            sections.append(
                Section(
                    f"op_donut_{_slug(str(phase))}",
                    f"Bottleneck: {phase}",
                    f"Where the kernel time of phase {phase} goes, by operator.",
                    chart=charts.op_donut(ops, str(phase)),
                    table=sub,
                    columns=op_cols,
                )
            )

    cat = Section(
        "category_share",
        "Category share per phase",
        "GPU time (kernels, memcpy, memset; sum of durations) per category, as a share "
        "of the phase.",
        table=cats,
        columns=cat_cols,
    )
    if cats.empty:
        cat.note = "No GPU activity in the run."
    else:
        cat.chart = charts.category_share(cats)
    sections.append(cat)

    lat = Section(
        "step_latency",
        "Step latency over time",
        "Wall time of each step range on the CPU (GPU span where a step has no range), "
        "with the batch size from the step payload underneath where recorded.",
        table=steps,
        columns=step_cols,
    )
    if steps.empty:
        lat.note = "No steps: the phase map matched no step ranges, so there is no series to draw."
    else:
        drawn, k = _reduce_steps(steps)
        lat.chart = charts.step_latency(drawn)
        if k > 1:
            lat.note = f"{len(steps):,} steps: each point is the mean of {k} consecutive steps."
    sections.append(lat)

    comm_table, why = _comm_table(parquet_paths)
    comm = Section(
        "comm",
        "Communication: transfer vs wait",
        "Per rank, communication kernel time split into transfer (the collective's "
        "minimum duration over ranks) and waiting for the slowest rank.",
        table=comm_table,
        note=why,
    )
    if comm_table is not None and not comm_table.empty:
        comm.chart = charts.comm_transfer_wait(comm_table)
    sections.append(comm)
    return sections


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")
    return out or "phase"


def _run_facts(parquet_paths: Sequence[Path]) -> str:
    """The header block: per run, its sources, GPUs, ranks, phase map and coverage."""
    blocks = []
    for p in parquet_paths:
        md = sql.check_run(p)
        cov = md.get("coverage") or {}
        gpus = md.get("gpus") or {}
        models = sorted(set(gpus.values()))
        phase_map = md.get("phase_map") or {}
        rows = [
            ("file", str(p)),
            (
                "sources",
                "; ".join(
                    f"{s.get('path')} [{s.get('format')}, {s.get('profiler') or '?'} "
                    f"{s.get('profiler_version') or ''}]".replace(" ]", "]")
                    for s in md.get("sources", [])
                )
                or "not recorded",
            ),
            (
                "GPUs",
                f"{len(gpus)} × {', '.join(models)}"
                if models
                else "model not recorded in the trace",
            ),
            ("ranks", f"{md.get('ranks')} (world size {md.get('world_size')})"),
            ("phase map", str(phase_map.get("name") or "none")),
            (
                "coverage",
                f"phase {_pct(cov.get('phase'))}, operator {_pct(cov.get('op'))} of GPU kernel time",
            ),
            (
                "ingested",
                f"{md.get('ingested_at', '?')} by tracekit {md.get('tracekit_version', '?')}",
            ),
        ]
        rows += [("warning", w) for w in md.get("warnings", [])]
        body = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
        )
        blocks.append(
            f"<div class='facts'><h2>Run {html.escape(str(md.get('run')))}</h2>"
            f"<table class='kv'>{body}</table></div>"
        )
    return "\n".join(blocks)


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def write_run_report(
    parquet_paths: Sequence[str | Path] | str | Path,
    path: str | Path,
    *,
    png_dir: str | Path | None = None,
    svg_dir: str | Path | None = None,
) -> Path:
    """Write the HTML report of one run (or several runs side by side).

    ``png_dir`` / ``svg_dir``: also write every chart as an image there.

    >>> write_run_report(["tp2.parquet"], "report.html")  # doctest: +SKIP
    PosixPath('report.html')
    """
    paths = (
        [Path(parquet_paths)]
        if isinstance(parquet_paths, str | Path)
        else list(map(Path, parquet_paths))
    )
    if not paths:
        raise TracekitError("No run given; pass one or more RUN.parquet files.")
    facts = _run_facts(paths)
    coverage = sql.run_query("coverage", paths)
    sections = run_sections(paths)
    labels = (
        ", ".join(str(r) for r in pd.unique(coverage["run"]))
        if not coverage.empty
        else ", ".join(p.stem for p in paths)
    )
    header = facts + _table_html(coverage, "Attribution coverage per rank", {})
    page = render_page(f"tracekit report: {labels}", header, sections)
    return _write(path, page, sections, png_dir, svg_dir)


# --------------------------------------------------------------------------- compare report

#: Compare levels drawn, in page order, and what one row of each is called.
COMPARE_LEVELS = {"phase": "phase", "category": "category", "op": "operator", "kernel": "kernel"}


def compare_frame(compare_result: Any, level: str) -> pd.DataFrame:
    """One level of a compare result in the shape :func:`charts.compare_ops` draws.

    ``compare_result`` is a :class:`tracekit.compare.CompareResult` (its ``rows``
    hold ns per unit in ``kernel_a``/``kernel_b``), or a DataFrame already in chart
    shape (``phase``, ``kind``, ``name``, ``a_ms_per_step``, ``b_ms_per_step``,
    ``ratio``, ``predicted_ratio``), of which the rows with ``kind == level`` are taken.
    """
    if isinstance(compare_result, pd.DataFrame):
        df = compare_result
        return df[df["kind"] == level] if "kind" in df.columns else df
    rows = getattr(compare_result, "rows", None)
    if not isinstance(rows, pd.DataFrame):
        raise TracekitError("The compare result has no rows to report.")
    sub = rows[rows["level"] == level]
    out = pd.DataFrame(
        {
            "phase": sub["phase"],
            "kind": sub["level"],
            "name": sub["key"],
            "unit": sub["unit"],
            "a_ms_per_step": sub["kernel_a"] / 1e6,
            "b_ms_per_step": sub["kernel_b"] / 1e6,
            "ratio": sub["ratio"],
            "predicted_ratio": sub["predicted"],
            "deviation": sub["deviation"],
            "noise": sub["noise"],
            "bound": sub["bound"],
            "share_a_pct": 100 * sub["share_a"],
            "share_b_pct": 100 * sub["share_b"],
        }
    )
    return out.reset_index(drop=True)


def _labels(compare_result: Any) -> tuple[str, str]:
    a, b = getattr(compare_result, "a", None), getattr(compare_result, "b", None)
    if a is not None and b is not None:
        return str(a.label), str(b.label)
    return "A", "B"


def compare_sections(compare_result: Any) -> list[Section]:
    """The charts and tables of a comparison, one per level (writes nothing)."""
    a_label, b_label = _labels(compare_result)
    sections = []
    for level, what in COMPARE_LEVELS.items():
        frame = compare_frame(compare_result, level)
        if frame.empty:
            continue
        sec = Section(
            f"compare_{level}",
            f"{b_label} vs {a_label} per {what}",
            f"Kernel time (sum of durations of kernels, memcpy and memset) per step on each "
            f"side, per phase and {what}. The label gives the measured ratio "
            f"{b_label}/{a_label} and, in brackets, the ratio the hardware predicts for the "
            f"resource that bounds the work; the black tick is where {b_label} would be if "
            "it scaled as predicted.",
            table=frame.drop(columns="kind"),
        )
        sec.chart = charts.compare_ops(frame, a_label=a_label, b_label=b_label, what=what)
        sections.append(sec)
    if not sections:
        raise TracekitError("The comparison has no rows to report.")
    return sections


def _compare_header(compare_result: Any) -> str:
    parts = []
    verdicts = getattr(compare_result, "verdicts", None)
    if isinstance(verdicts, pd.DataFrame) and not verdicts.empty:
        items = "".join(f"<li>{html.escape(str(v))}</li>" for v in verdicts["verdict"])
        parts.append(f"<div class='facts'><h2>Verdicts</h2><ul>{items}</ul></div>")
    sides = []
    for key in ("a", "b"):
        side = getattr(compare_result, key, None)
        if side is None:
            continue
        gpu = side.gpu.name if getattr(side, "gpu", None) is not None else None
        models = ", ".join(getattr(side, "gpu_models", []) or []) or "not recorded"
        rows = [
            (f"{key.upper()}: {side.label}", f"{len(side.files)} run(s): {', '.join(side.files)}"),
            ("GPU", f"{gpu or 'unknown'} (trace says: {models})"),
            ("TP / ranks", f"{side.tp} / {side.ranks}"),
        ]
        sides.extend(rows)
    for name in ("per", "ranks", "dtype", "tolerance"):
        if hasattr(compare_result, name):
            sides.append((name, str(getattr(compare_result, name))))
    sides += [("note", str(n)) for n in getattr(compare_result, "notes", []) or []]
    if sides:
        body = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in sides
        )
        parts.append(f"<div class='facts'><h2>Sides</h2><table class='kv'>{body}</table></div>")
    return "\n".join(parts)


def write_compare_report(
    compare_result: Any,
    path: str | Path,
    *,
    png_dir: str | Path | None = None,
    svg_dir: str | Path | None = None,
) -> Path:
    """Write the HTML report of a comparison of two deployments.

    ``compare_result`` is what :func:`tracekit.compare.compare` returns, or a table
    in chart shape (see :func:`compare_frame`).

    >>> write_compare_report(compare(["a100.parquet"], ["h100.parquet"]), "cmp.html")  # doctest: +SKIP
    PosixPath('cmp.html')
    """
    a_label, b_label = _labels(compare_result)
    sections = compare_sections(compare_result)
    header = _compare_header(compare_result)
    page = render_page(f"tracekit compare: {b_label} vs {a_label}", header, sections)
    return _write(path, page, sections, png_dir, svg_dir)


# --------------------------------------------------------------------------- HTML


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif;
       margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 17px; margin: 18px 0 6px 0; }
p.lead, p.text { color: #555; margin: 2px 0 10px 0; max-width: 1100px; }
p.note { color: #8a5300; background: #fff6e5; padding: 6px 10px; border-radius: 4px; }
.facts table.kv th { text-align: left; padding: 2px 14px 2px 0; color: #555; font-weight: 600;
                     vertical-align: top; white-space: nowrap; }
.facts table.kv td { padding: 2px 0; }
section { border-top: 1px solid #ddd; margin-top: 18px; padding-top: 6px; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.chart { flex: 0 0 auto; }
.tablebox { flex: 1 1 420px; max-height: 460px; overflow: auto; min-width: 360px; }
table.data { border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: right;
                               white-space: nowrap; }
table.data th { position: sticky; top: 0; background: #f6f6f6; }
table.data td.t, table.data th.t { text-align: left; max-width: 340px; overflow: hidden;
                                   text-overflow: ellipsis; }
#tk-errors { color: #a00; white-space: pre-wrap; }
#tk-status { color: #777; font-size: 12px; margin-top: 24px; }
"""

# Runs before the bundle, so errors anywhere on the page are caught and listed.
STATUS_JS = """
window.tkStatus = {errors: [], warnings: []};
(function () {
  function text(args) {
    return Array.prototype.map.call(args, function (a) {
      return a && a.stack ? String(a.stack) : (typeof a === 'object' ? JSON.stringify(a) : String(a));
    }).join(' ');
  }
  var err = console.error.bind(console), warn = console.warn.bind(console);
  console.error = function () { window.tkStatus.errors.push(text(arguments)); err.apply(null, arguments); };
  console.warn = function () { window.tkStatus.warnings.push(text(arguments)); warn.apply(null, arguments); };
  window.addEventListener('error', function (e) {
    window.tkStatus.errors.push('Uncaught ' + (e.message || e.type));
  });
  window.addEventListener('unhandledrejection', function (e) {
    window.tkStatus.errors.push('Unhandled rejection: ' + text([e.reason]));
  });
})();
"""

EMBED_JS = """
(function () {
  var status = document.getElementById('tk-status');
  var holders = document.querySelectorAll('script[type="application/json"][data-chart]');
  var jobs = Array.prototype.map.call(holders, function (el) {
    var spec = JSON.parse(el.textContent);
    var opts = {renderer: 'svg', actions: {export: true, source: false, compiled: false, editor: false}};
    return vegaEmbed('#' + el.dataset.chart, spec, opts).then(function (res) {
      var target = document.getElementById(el.dataset.chart);
      target.dataset.rendered = target.querySelector('svg.marks, canvas') ? 'yes' : 'no';
      return res;
    }).catch(function (e) {
      console.error('chart ' + el.dataset.chart + ': ' + (e && e.message ? e.message : e));
    });
  });
  Promise.all(jobs).then(function () {
    var ok = document.querySelectorAll('[data-rendered="yes"]').length;
    var s = window.tkStatus;
    status.dataset.charts = String(holders.length);
    status.dataset.rendered = String(ok);
    status.dataset.errors = String(s.errors.length);
    status.dataset.warnings = String(s.warnings.length);
    status.dataset.state = 'done';
    status.textContent = ok + ' of ' + holders.length + ' charts rendered' +
      (s.errors.length ? ', ' + s.errors.length + ' error(s)' : '') +
      (s.warnings.length ? ', ' + s.warnings.length + ' warning(s)' : '') + '.';
    if (s.errors.length || s.warnings.length) {
      document.getElementById('tk-errors').textContent = s.errors.concat(s.warnings).join('\\n');
    }
  });
})();
"""


def _json_script(data: str) -> str:
    """JSON text safe inside ``<script>``: ``<\\/`` is the same string to JSON."""
    return data.replace("</", "<\\/").replace("<!--", "<\\u0021--")


def _js_script(code: str) -> str:
    """JavaScript safe inside ``<script>``: only a literal ``</script`` could end it.

    A general ``</`` rewrite would change regular expressions such as ``/</g``.
    """
    return re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)


def _vega_bundle() -> str:
    try:
        import vl_convert as vlc
    except ImportError:
        raise TracekitError(
            "The HTML report needs vl-convert-python (it inlines Vega from it); "
            "install it with pip install 'tracekit[charts]'."
        ) from None
    version = "_".join(alt.SCHEMA_VERSION.split(".")[:2])
    return _js_script(vlc.javascript_bundle(BUNDLE_SNIPPET, vl_version=version))


def _is_text(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def _table_html(df: pd.DataFrame | None, caption: str, columns: dict[str, str]) -> str:
    if df is None or df.empty:
        return ""
    shown = df.head(MAX_TABLE_ROWS)
    text_cols = [_is_text(shown[c]) for c in shown.columns]
    head = "".join(
        f"<th class='{'t' if t else 'n'}' title='{html.escape(columns.get(str(c), ''), quote=True)}'>"
        f"{html.escape(str(c))}</th>"
        for c, t in zip(shown.columns, text_cols, strict=True)
    )
    cells = [shown[c].astype(object).tolist() for c in shown.columns]
    body = []
    for i in range(len(shown)):  # rows of an aggregated table, at most MAX_TABLE_ROWS
        tds = "".join(
            f"<td class='{'t' if t else 'n'}'>{html.escape(_cell(col[i]))}</td>"
            for col, t in zip(cells, text_cols, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    more = (
        f"<p class='text'>First {MAX_TABLE_ROWS} of {len(df):,} rows.</p>"
        if len(df) > MAX_TABLE_ROWS
        else ""
    )
    return (
        f"<div class='tablebox'><table class='data'><caption hidden>{html.escape(caption)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}</div>"
    )


def _cell(value: Any, width: int = 80) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return (
            f"{value:,.4g}"
            if abs(value) < 1e-3 and value
            else f"{value:,.3f}".rstrip("0").rstrip(".")
        )
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _section_html(sec: Section) -> str:
    parts = [f"<section id='{sec.key}'><h2>{html.escape(sec.title)}</h2>"]
    if sec.text:
        parts.append(f"<p class='text'>{html.escape(sec.text)}</p>")
    if sec.note:
        parts.append(f"<p class='note'>{html.escape(sec.note)}</p>")
    parts.append("<div class='row'>")
    if sec.chart is not None:
        spec = json.dumps(sec.chart.to_dict(), allow_nan=False, default=str)
        parts.append(f"<div class='chart' id='chart-{sec.key}'></div>")
        parts.append(
            f"<script type='application/json' data-chart='chart-{sec.key}'>{_json_script(spec)}</script>"
        )
    parts.append(_table_html(sec.table, sec.title, sec.columns))
    parts.append("</div></section>")
    return "".join(parts)


def render_page(title: str, header_html: str, sections: Iterable[Section]) -> str:
    """The whole HTML page as text (self-contained; no network needed to view it)."""
    body = "\n".join(_section_html(s) for s in sections)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tracekit {html.escape(__version__)}">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
<script>{STATUS_JS}</script>
<script>{_vega_bundle()}</script>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="lead">Written {stamp} by tracekit {html.escape(__version__)}. Kernel time = sum of
kernel durations (streams overlap, so it can exceed wall time); busy time = union of a
device's activity intervals; wall time = the step range on the CPU thread.</p>
<pre id="tk-errors"></pre>
{header_html}
{body}
<div id="tk-status" data-state="pending">Charts need JavaScript to render.</div>
<script>{EMBED_JS}</script>
</body>
</html>
"""


# --------------------------------------------------------------------------- files


def export_charts(sections: Iterable[Section], folder: str | Path, fmt: str) -> list[Path]:
    """Write every chart of ``sections`` as ``KEY.png`` or ``KEY.svg`` into ``folder``."""
    if fmt not in EXPORT_FORMATS:
        raise TracekitError(f"Charts export as {' or '.join(EXPORT_FORMATS)}, not {fmt!r}.")
    try:
        import vl_convert as vlc
    except ImportError:
        raise TracekitError(
            f"Exporting {fmt.upper()} needs vl-convert-python; install it with pip install 'tracekit[charts]'."
        ) from None
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise TracekitError(f"{out} is a file; name a folder for the {fmt.upper()} charts.")
    out.mkdir(parents=True, exist_ok=True)
    version = "_".join(alt.SCHEMA_VERSION.split(".")[:2])
    written = []
    for sec in sections:
        if sec.chart is None:
            continue
        spec = sec.chart.to_dict()
        target = out / f"{sec.key}.{fmt}"
        if fmt == "png":
            target.write_bytes(vlc.vegalite_to_png(spec, vl_version=version, scale=2))
        else:
            target.write_text(vlc.vegalite_to_svg(spec, vl_version=version), encoding="utf-8")
        written.append(target)
    return written


def _write(
    path: str | Path,
    page: str,
    sections: list[Section],
    png_dir: str | Path | None,
    svg_dir: str | Path | None,
) -> Path:
    target = Path(path)
    if target.is_dir():
        raise TracekitError(f"{target} is a folder; name an .html file for the report.")
    if not target.parent.exists():
        raise TracekitError(f"Output folder {target.parent} does not exist.")
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    if png_dir is not None:
        export_charts(sections, png_dir, "png")
    if svg_dir is not None:
        export_charts(sections, svg_dir, "svg")
    return target
