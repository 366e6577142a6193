"""Launch-based attribution: every GPU activity gets the range stack of the CPU
thread that launched it, at the instant it was launched.

GPU activity --(pid, correlation)--> launching runtime call --(pid, tid, time)-->
ranges open on that thread --> ``path``, ``op``, ``phase``, ``step``, ``layer``.

Never by time overlap on the GPU: kernels run later than their launch, often
after the range that launched them has closed.  All of it is sort-and-sweep on
NumPy arrays: ranges that nest properly on a thread are sorted once, their depth
comes from counting opens and closes, and the innermost range open at a time
point is a ``searchsorted`` into the ranges of that depth.  Python loops run over
nesting levels (tens), never over events.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.phasemap import PhaseMap
from tracekit.schema import GPU_KINDS

_NONE = -1
# PyTorch's NVTX ranges (emit_nvtx, autograd) carry per-call counters; the operator
# is the text before them.  The `name` column keeps the full text.
_CALL_SUFFIX = r",\s*(?:seq|op_id|sizes|input_op_ids|stashed seq|stream)\s*=.*$"


def base_names(names: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Range texts without PyTorch's per-call counters, vectorised (RE2 in Arrow):
    phase maps and operator names work on these, so a trace whose every range text
    is unique by its ``op_id`` still has few distinct names."""
    return pc.replace_substring_regex(names, pattern=_CALL_SUFFIX, replacement="")


# torch.profiler module frames name the instance ("nn.Module: RMSNorm_57"); the
# operator is the class.
_MODULE_INSTANCE = re.compile(r"^(nn\.Module: [A-Za-z_][A-Za-z0-9_]*?)_\d+$")


def _clean(name: str) -> str:
    return _MODULE_INSTANCE.sub(r"\1", name)


@dataclass
class Attribution:
    """The input table with the attribution columns filled (payload marker rows
    dropped), and how steps were numbered."""

    table: pa.Table
    step_mode: str  # "step" (step ranges number steps) or "phase" (phase ranges do)


def _np(col: pa.ChunkedArray | pa.Array, fill: int) -> np.ndarray:
    return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False), dtype=np.int64)


def _thread_index(pid: np.ndarray, tid: np.ndarray) -> np.ndarray:
    """Dense index of (pid, tid) pairs (1-D keys: ``np.unique(axis=0)`` is slow)."""
    _, p = np.unique(pid, return_inverse=True)
    _, t = np.unique(tid, return_inverse=True)
    t = t.reshape(-1).astype(np.int64)
    key = p.reshape(-1).astype(np.int64) * (int(t.max(initial=0)) + 1) + t
    _, inv = np.unique(key, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


@dataclass
class _Ranges:
    """Ranges usable as launch stacks, sorted by (thread, start, -end)."""

    row: np.ndarray  # row index into the table
    thread: np.ndarray
    start: np.ndarray
    end: np.ndarray
    depth: np.ndarray
    parent: np.ndarray  # index into these arrays, -1 at depth 0
    key_start: np.ndarray  # combined (thread, dense time) keys
    key_end_sorted: np.ndarray
    by_level: list[tuple[np.ndarray, np.ndarray]]  # per depth: (sorted start keys, range idx)


def _dense_keys(thread: np.ndarray, times: np.ndarray, n_threads: int) -> tuple[np.ndarray, int]:
    """Combine (thread, time) into one sortable int64 that cannot overflow:
    times are replaced by their rank among all distinct times."""
    uniq, inv = np.unique(times, return_inverse=True)
    span = len(uniq) + 1
    return thread * span + inv.reshape(-1), span


def _build_ranges(
    thread: np.ndarray, start: np.ndarray, end: np.ndarray, rows: np.ndarray, q_thread: np.ndarray,
    q_time: np.ndarray,
) -> tuple[_Ranges, np.ndarray]:
    """Sort the ranges, compute depth and parent; return them with the query keys."""
    n = len(rows)
    n_threads = int(max(thread.max(initial=-1), q_thread.max(initial=-1))) + 1
    all_t = np.concatenate([start, end, q_time])
    all_th = np.concatenate([thread, thread, q_thread])
    keys, _ = _dense_keys(all_th, all_t, max(n_threads, 1))
    k_start, k_end, k_query = keys[:n], keys[n : 2 * n], keys[2 * n :]

    order = np.lexsort((-k_end, k_start))  # by start, longer first at equal starts
    k_start, k_end = k_start[order], k_end[order]
    rows, thread, start, end = rows[order], thread[order], start[order], end[order]
    ends_sorted = np.sort(k_end)
    # Depth = ranges opened before me on my thread minus those closed by my start.
    # Keys of other threads sort wholly before or after, so the counts cancel.
    opened_before = np.arange(n)
    closed_by = np.searchsorted(ends_sorted, k_start, side="right")
    depth = (opened_before - closed_by).astype(np.int64)
    # A thread's first range must sit at depth 0: subtract ranges of earlier threads
    # that are still "open" in key order (none: their ends sort before too).
    depth = np.maximum(depth, 0)

    parent = np.full(n, _NONE, dtype=np.int64)
    by_level: list[tuple[np.ndarray, np.ndarray]] = []
    max_depth = int(depth.max(initial=-1))
    for d in range(max_depth + 1):
        idx = np.flatnonzero(depth == d)
        by_level.append((k_start[idx], idx))
        if d == 0:
            continue
        child = idx
        p_keys, p_idx = by_level[d - 1]
        pos = np.searchsorted(p_keys, k_start[child], side="right") - 1
        ok = pos >= 0
        cand = np.where(ok, p_idx[np.clip(pos, 0, None)], _NONE)
        ok &= cand >= 0
        ok &= np.where(ok, thread[np.clip(cand, 0, None)] == thread[child], False)
        parent[child] = np.where(ok, cand, _NONE)
    return (
        _Ranges(rows, thread, start, end, depth, parent, k_start, ends_sorted, by_level),
        k_query,
    )


def _innermost(r: _Ranges, q_key: np.ndarray, q_time: np.ndarray, q_thread: np.ndarray) -> np.ndarray:
    """Index (into r) of the innermost range open at each query point, or -1."""
    n_open = np.searchsorted(r.key_start, q_key, side="right") - np.searchsorted(
        r.key_end_sorted, q_key, side="right"
    )
    out = np.full(len(q_key), _NONE, dtype=np.int64)
    level = n_open - 1
    for d in range(len(r.by_level)):
        sel = np.flatnonzero(level == d)
        if len(sel) == 0:
            continue
        keys, idx = r.by_level[d]
        pos = np.searchsorted(keys, q_key[sel], side="right") - 1
        out[sel] = np.where(pos >= 0, idx[np.clip(pos, 0, None)], _NONE)
    # Defensive against improperly nested input: climb while the candidate does not
    # contain the point (or sits on another thread).
    for _ in range(len(r.by_level)):
        has = out >= 0
        c = np.clip(out, 0, None)
        bad = has & ((r.end[c] <= q_time) | (r.start[c] > q_time) | (r.thread[c] != q_thread))
        if not bad.any():
            break
        out[bad] = r.parent[c[bad]]
    return out


def _per_distinct(dict_values: list[str], fn: Any, dtype: Any) -> np.ndarray:
    """``fn`` applied once per distinct value (distinct names are few)."""
    return np.array([fn(v) for v in dict_values], dtype=dtype)


def _payload_number(text: str | None, key: str) -> float:
    if not text or not text.startswith("{"):
        return np.nan
    try:
        v = json.loads(text).get(key)
    except (ValueError, AttributeError):
        return np.nan
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan


def _encode(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str | None]]:
    """Dictionary-encode strings: (indices with -1 for NULL, distinct values)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    enc = pc.dictionary_encode(arr)
    idx = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), np.int64)
    return idx, enc.dictionary.to_pylist()


def _dict_column(idx: np.ndarray, values: list[str]) -> pa.Array:
    """A dictionary-encoded string column from indices into ``values`` (-1 = NULL)."""
    mask = idx < 0
    d = pa.DictionaryArray.from_arrays(
        pa.array(np.where(mask, 0, idx).astype(np.int32), mask=mask),
        pa.array(values if values else [""], type=pa.string()),
    )
    return d


PAYLOAD_MARKER = "tracekit.payload:"


def _marker_json(text: str) -> str:
    """``tracekit.payload:batch_size=8,tokens=1024`` -> ``{"batch_size": 8, "tokens": 1024}``."""
    out: dict[str, object] = {}
    for item in text[len(PAYLOAD_MARKER) :].split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            continue
        v: object = value.strip()
        for conv in (int, float):
            try:
                v = conv(value)
                break
            except ValueError:
                pass
        out[key.strip()] = v
    return json.dumps(out)


def _attach_payload_markers(
    table: pa.Table, is_marker: np.ndarray, q_rows: np.ndarray, inner: np.ndarray, range_rows: np.ndarray
) -> tuple[pa.Table, list[str]]:
    """Set ``payload`` of the range enclosing each payload marker (marker rows are
    query points, so ``inner`` already names that range)."""
    sel = is_marker[q_rows] & (inner >= 0)
    if not sel.any():
        return table, table.column_names
    target = range_rows[inner[sel]]
    texts = table.column("name").take(pa.array(q_rows[sel]))
    idx, distinct = _encode(texts)
    as_json = np.array([_marker_json(t or "") for t in distinct], dtype=object)
    order = np.argsort(target, kind="stable")
    target, values = target[order], as_json[idx[order]]
    # One marker per range: the last one wins.
    last = np.ones(len(target), bool)
    last[:-1] = target[1:] != target[:-1]
    target, values = target[last], values[last]
    mask = np.zeros(table.num_rows, bool)
    mask[target] = True
    current = (
        table.column("payload").combine_chunks().cast(pa.string())
        if "payload" in table.column_names
        else pa.nulls(table.num_rows, pa.string())
    )
    new = pc.replace_with_mask(current, pa.array(mask), pa.array(list(values), pa.string()))
    if "payload" in table.column_names:
        table = table.set_column(table.column_names.index("payload"), "payload", new)
    else:
        table = table.append_column("payload", new)
    return table, table.column_names


def _kind_mask(col: pa.ChunkedArray, kinds: tuple[str, ...]) -> np.ndarray:
    m = pc.is_in(col, value_set=pa.array(list(kinds)))
    return np.asarray(pc.fill_null(m, False).to_numpy(zero_copy_only=False), bool)


@dataclass
class _CapturePoints:
    """Where the nodes of replayed CUDA graphs were captured, one point per node."""

    rows: np.ndarray  # GPU rows replayed from a graph
    node_of_row: np.ndarray  # index into the points (-1: capture unknown)
    pid: np.ndarray
    tid: np.ndarray
    time: np.ndarray


def _capture_points(table: pa.Table, graph_nodes: pa.Table | None, is_gpu: np.ndarray) -> _CapturePoints | None:
    """Follow each replayed kernel's graph node back to the node that was captured
    (instantiation clones it: ``original_graph_node_id``) and take that creation's
    thread and time.  Joins run per distinct node, never per kernel."""
    if graph_nodes is None or graph_nodes.num_rows == 0 or "graph_node_id" not in table.column_names:
        return None
    import pandas as pd

    gid = _np(table.column("graph_node_id"), _NONE)
    rows = np.flatnonzero(is_gpu & (gid != _NONE))
    if not len(rows):
        return None
    k = pd.DataFrame({"pid": _np(table.column("pid"), 0)[rows], "node": gid[rows]})
    nodes = k.drop_duplicates().reset_index(drop=True)
    # A node id can have two creation events (e.g. the executable graph's node is
    # recorded once bare, once as a clone): keep the one that names its original.
    ev = graph_nodes.to_pandas().sort_values(
        "original_graph_node_id", na_position="last", kind="stable"
    ).drop_duplicates(["pid", "graph_node_id"])
    ev = ev.set_index(["pid", "graph_node_id"])
    look = nodes["node"].to_numpy(np.float64)
    for _ in range(4):  # clone of a clone is possible; chains are short
        idx = pd.MultiIndex.from_arrays([nodes["pid"], look])
        orig = ev["original_graph_node_id"].reindex(idx).to_numpy(np.float64)
        follow = ~np.isnan(orig) & (orig != look)
        if not follow.any():
            break
        look = np.where(follow, orig, look)
    hit = ev.reindex(pd.MultiIndex.from_arrays([nodes["pid"], look]))
    ok = hit["tid"].notna().to_numpy()
    point = np.full(len(nodes), _NONE, np.int64)
    point[ok] = np.arange(int(ok.sum()))
    node_no = k.merge(nodes.reset_index(), on=["pid", "node"], how="left")["index"].to_numpy()
    return _CapturePoints(
        rows=rows,
        node_of_row=point[node_no],
        pid=nodes["pid"].to_numpy(np.int64)[ok],
        tid=hit["tid"].to_numpy()[ok].astype(np.int64),
        time=hit["start_ns"].to_numpy()[ok].astype(np.int64),
    )


def attribute(table: pa.Table, phase_map: PhaseMap, graph_nodes: pa.Table | None = None) -> Attribution:
    """Fill ``depth``, ``path``, ``op``, ``phase``, ``step``, ``layer``,
    ``batch_size``, ``tokens``, ``launch_tid`` and ``launch_ns`` on ``table``.

    GPU activities are attributed through their launching call; CPU events
    (runtime calls, ranges, operators) through their own thread at their start.
    Worked examples on real traces: tests/test_attribute.py.
    """
    n = table.num_rows
    cols = table.column_names

    def col(name: str, fill: int) -> np.ndarray:
        return _np(table.column(name), fill) if name in cols else np.full(n, fill, np.int64)

    kcol = table.column("kind")
    pid, tid, rank = col("pid", 0), col("tid", _NONE), col("rank", _NONE)
    start, end = col("start_ns", 0), col("end_ns", 0)
    corr, device = col("correlation", _NONE), col("device", _NONE)
    nested = (
        np.asarray(pc.fill_null(table.column("nested"), True).to_numpy(zero_copy_only=False), bool)
        if "nested" in cols
        else np.ones(n, bool)
    )
    is_gpu = _kind_mask(kcol, GPU_KINDS)
    # nvtx_ranges payload markers (zero-length, right inside a step range): attached
    # to the range around them as JSON, then dropped.
    is_marker = (
        _kind_mask(kcol, ("range",))
        & np.asarray(
            pc.fill_null(pc.starts_with(table.column("name"), PAYLOAD_MARKER), False).to_numpy(
                zero_copy_only=False
            ),
            bool,
        )
        & (end == start)
    )
    is_runtime = _kind_mask(kcol, ("runtime",))
    # Ranges usable as a launch stack: nested on a CPU thread, non-empty.
    is_range = _kind_mask(kcol, ("range",)) & nested & (tid != _NONE) & (device == _NONE) & (end > start)

    # 1) GPU activity -> launching call (same pid, same correlation).
    launch_tid = np.full(n, _NONE, np.int64)
    launch_ns = np.full(n, _NONE, np.int64)
    rt = np.flatnonzero(is_runtime & (corr != _NONE))
    g = np.flatnonzero(is_gpu & (corr != _NONE))
    if len(rt) and len(g):
        # Earliest call per (pid, correlation): the outermost API when several share it.
        o = np.lexsort((start[rt], corr[rt], pid[rt]))
        rs = rt[o]
        k0, k1 = pid[rs], corr[rs]
        first = np.ones(len(rs), bool)
        first[1:] = (k0[1:] != k0[:-1]) | (k1[1:] != k1[:-1])
        rs = rs[first]
        _, pid_code = np.unique(np.concatenate([pid[rs], pid[g]]), return_inverse=True)
        span = int(max(corr[rs].max(initial=0), corr[g].max(initial=0))) + 1
        rk = pid_code[: len(rs)] * span + corr[rs]  # sorted: (pid, corr) order kept
        gk = pid_code[len(rs) :] * span + corr[g]
        pos = np.clip(np.searchsorted(rk, gk), 0, len(rk) - 1)
        hit = rk[pos] == gk
        src = rs[pos[hit]]
        launch_tid[g[hit]] = tid[src]
        launch_ns[g[hit]] = start[src]

    # 2) Query points: CPU events at their own start; GPU activities at their launch.
    q_rows = np.flatnonzero(((tid != _NONE) & ~is_gpu & ~is_range) | (launch_tid != _NONE))
    q_pid = pid[q_rows]
    q_tid = np.where(is_gpu[q_rows], launch_tid[q_rows], tid[q_rows])
    q_time = np.where(is_gpu[q_rows], launch_ns[q_rows], start[q_rows])

    # CUDA graph replays: also ask for the stack where each node was captured.
    cap = _capture_points(table, graph_nodes, is_gpu)
    n_q = len(q_rows)
    if cap is not None:
        q_pid = np.concatenate([q_pid, cap.pid])
        q_tid = np.concatenate([q_tid, cap.tid])
        q_time = np.concatenate([q_time, cap.time])

    r_rows = np.flatnonzero(is_range)
    depth_col = np.full(n, _NONE, np.int64)
    path_col = np.full(n, _NONE, np.int64)  # index into path_values
    op_col = np.full(n, _NONE, np.int64)  # index into name_values
    phase_col = np.full(n, _NONE, np.int64)  # index into phase_values
    step_col = np.full(n, _NONE, np.int64)
    layer_col = np.full(n, _NONE, np.int64)
    batch_col = np.full(n, np.nan)
    tokens_col = np.full(n, np.nan)
    path_values: list[str] = []
    name_values: list[str] = []
    phase_values: list[str] = []
    step_mode = "phase"

    if len(r_rows):
        th_all = _thread_index(
            np.concatenate([pid[r_rows], q_pid]), np.concatenate([tid[r_rows], q_tid])
        )
        r_thread, q_thread = th_all[: len(r_rows)], th_all[len(r_rows) :]
        R, q_key = _build_ranges(r_thread, start[r_rows], end[r_rows], r_rows, q_thread, q_time)
        inner_all = _innermost(R, q_key, q_time, q_thread)
        inner, inner_cap = inner_all[:n_q], inner_all[n_q:]
        table, cols = _attach_payload_markers(table, is_marker, q_rows, inner, R.row)
        nr = len(R.row)
        name_id, raw_names = _encode(base_names(table.column("name").take(pa.array(R.row))))
        # The phase map sees the range text (less per-call counters); path and op
        # also drop module instance numbers.
        full_values = [v if v is not None else "" for v in raw_names] + [""]
        name_values = [_clean(v) for v in full_values]
        name_id = np.where(name_id < 0, len(name_values) - 1, name_id)

        # Per-range facts from the phase map, computed once per distinct name.
        d_phase = [phase_map.phase_of(v) for v in full_values]
        phase_values = sorted({p for p in d_phase if p is not None})
        d_phase_id = np.array([phase_values.index(p) if p else _NONE for p in d_phase], np.int64)
        d_step = _per_distinct(full_values, phase_map.is_step, bool)
        d_layer = _per_distinct(
            full_values, lambda v: -2 if (x := phase_map.layer_of(v)) is None else x, np.int64
        )
        d_skip = _per_distinct(full_values, phase_map.is_skip, bool)
        r_phase_id = d_phase_id[name_id]
        r_is_phase = r_phase_id >= 0
        r_is_step = d_step[name_id]
        r_layer = d_layer[name_id]
        r_is_layer = r_layer != -2
        eligible = ~(r_is_phase | r_is_step | r_is_layer | d_skip[name_id])

        # Inherit down the tree, one nesting level at a time (top-down).  Paths are
        # interned: a path id per distinct (parent path, name) pair.
        ar = np.arange(nr)
        path_id = np.full(nr, _NONE, np.int64)
        ph = np.where(r_is_phase, ar, _NONE)
        st = np.where(r_is_step, ar, _NONE)
        op = np.where(eligible, ar, _NONE)
        ly = np.where(r_is_layer, r_layer, _NONE)
        for d in range(len(R.by_level)):
            idx = R.by_level[d][1]
            par = R.parent[idx]
            parent_path = np.where(par >= 0, path_id[np.clip(par, 0, None)], _NONE)
            nn = len(name_values) + 1
            ukey, inv = np.unique((parent_path + 1) * nn + name_id[idx], return_inverse=True)
            base = len(path_values)
            # One iteration per distinct path, not per range.
            for pp, nm in zip((ukey // nn - 1).tolist(), (ukey % nn).tolist(), strict=True):
                leaf = name_values[nm]
                path_values.append(leaf if pp < 0 else f"{path_values[pp]}/{leaf}")
            path_id[idx] = base + inv.reshape(-1)
            if d == 0:
                continue
            has = par >= 0
            c, p = idx[has], par[has]
            ph[c] = np.where(ph[c] >= 0, ph[c], ph[p])
            st[c] = np.where(st[c] >= 0, st[c], st[p])
            # An op never leaks from above the phase range into it.
            op[c] = np.where(op[c] >= 0, op[c], np.where(r_is_phase[c], _NONE, op[p]))
            ly[c] = np.where(ly[c] >= 0, ly[c], ly[p])

        # Steps are numbered by step ranges when the trace has any inside or around
        # a phase range; otherwise by the phase ranges themselves.
        around_phase = np.zeros(nr, bool)
        around_phase[st[(ph >= 0) & (st >= 0)]] = True
        step_like = r_is_step & ((ph >= 0) | around_phase)
        if step_like.any():
            step_mode = "step"
            defining = st
        else:
            step_like = r_is_phase
            defining = ph
        sd = np.flatnonzero(step_like)
        sd_rank = rank[R.row[sd]]
        o = np.lexsort((R.start[sd], sd_rank))
        sd_sorted, rk = sd[o], sd_rank[o]
        newgrp = np.ones(len(rk), bool)
        newgrp[1:] = rk[1:] != rk[:-1]
        grp_first = np.maximum.accumulate(np.where(newgrp, np.arange(len(rk)), 0))
        step_no = np.full(nr, _NONE, np.int64)
        step_no[sd_sorted] = np.arange(len(rk)) - grp_first
        dc = np.clip(defining, 0, None)
        r_step = np.where(defining >= 0, step_no[dc], _NONE)

        # Batch size and tokens from the payload of the step-defining range.
        r_batch = np.full(nr, np.nan)
        r_tokens = np.full(nr, np.nan)
        if "payload" in cols:
            pl_id, pl_values = _encode(table.column("payload").take(pa.array(R.row[sd])))
            for key, target in (("batch_size", r_batch), ("tokens", r_tokens)):
                vals = np.array([_payload_number(v, key) for v in pl_values] + [np.nan])
                target[sd] = vals[np.where(pl_id < 0, len(pl_values), pl_id)]
        r_batch = np.where(defining >= 0, r_batch[dc], np.nan)
        r_tokens = np.where(defining >= 0, r_tokens[dc], np.nan)
        r_op_name = np.where(op >= 0, name_id[np.clip(op, 0, None)], _NONE)
        r_phase_of = np.where(ph >= 0, r_phase_id[np.clip(ph, 0, None)], _NONE)

        def assign(rows: np.ndarray, ridx: np.ndarray) -> None:
            has = ridx >= 0
            rows, ridx = rows[has], ridx[has]
            path_col[rows] = path_id[ridx]
            phase_col[rows] = r_phase_of[ridx]
            op_col[rows] = r_op_name[ridx]
            step_col[rows] = r_step[ridx]
            layer_col[rows] = ly[ridx]
            batch_col[rows] = r_batch[ridx]
            tokens_col[rows] = r_tokens[ridx]

        depth_col[R.row] = R.depth
        assign(R.row, ar)  # ranges: their own stack, self included
        assign(q_rows, inner)
        if cap is not None:
            # The operator (and layer) open when the node was captured wins over the
            # launch stack, which holds only the cudaGraphLaunch; phase and step stay
            # those of the launch.
            has = cap.node_of_row >= 0
            node_r = np.where(has, inner_cap[np.clip(cap.node_of_row, 0, None)], _NONE)
            has &= node_r >= 0
            rows_c, rr = cap.rows[has], node_r[has]
            cap_op = r_op_name[rr]
            op_col[rows_c] = np.where(cap_op >= 0, cap_op, op_col[rows_c])
            cap_layer = ly[rr]
            layer_col[rows_c] = np.where(cap_layer >= 0, cap_layer, layer_col[rows_c])

    def int_arr(a: np.ndarray, t: pa.DataType) -> pa.Array:
        return pa.array(a, type=t, mask=a == _NONE)

    def float_int_arr(a: np.ndarray) -> pa.Array:
        m = np.isnan(a)
        return pa.array(np.where(m, 0, a).astype(np.int64), type=pa.int64(), mask=m)

    out_cols = {
        "depth": int_arr(depth_col, pa.int32()),
        "path": _dict_column(path_col, path_values),
        "op": _dict_column(op_col, name_values),
        "phase": _dict_column(phase_col, phase_values),
        "step": int_arr(step_col, pa.int32()),
        "layer": int_arr(layer_col, pa.int32()),
        "batch_size": float_int_arr(batch_col),
        "tokens": float_int_arr(tokens_col),
        "launch_tid": int_arr(launch_tid, pa.int64()),
        "launch_ns": int_arr(launch_ns, pa.int64()),
    }
    for name, arr in out_cols.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, arr)
        else:
            table = table.append_column(name, arr)
    if is_marker.any():
        table = table.filter(pa.array(~is_marker))
    return Attribution(table=table, step_mode=step_mode)
