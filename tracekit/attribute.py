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
    #: The input rows kept (None: all of them), to align columns made beside it.
    kept: pa.BooleanArray | None = None


def _np(col: pa.ChunkedArray | pa.Array, fill: int) -> np.ndarray:
    return np.asarray(pc.fill_null(col, fill).to_numpy(zero_copy_only=False), dtype=np.int64)


def dense_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, code of each value): a lookup table for small
    non-negative ids (pids, tids) not far sparser than the rows (a table entry
    costs about a thirtieth of a hashed row; Linux tids run to millions, and a
    table that size for a few thousand ranges cost more than hashing them), else
    a hash pass; never a sort of all rows."""
    if len(values) and values.min() >= 0 and values.max() < min(1 << 25, 32 * len(values) + (1 << 16)):
        present = np.zeros(int(values.max()) + 1, bool)
        present[values] = True
        uniq = np.flatnonzero(present)
        lut = np.cumsum(present, dtype=np.int64) - 1
        return uniq.astype(np.int64), lut[values]
    enc = pc.dictionary_encode(pa.array(values, pa.int64()))
    uniq = np.asarray(enc.dictionary.to_numpy(zero_copy_only=False), np.int64)
    order = np.argsort(uniq, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int64)]
    return uniq[order], codes


def _find(sorted_values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Position of each ``q`` in ``sorted_values``, or -1 where absent."""
    if len(sorted_values) == 0:
        return np.full(len(q), _NONE, np.int64)
    pos = np.clip(np.searchsorted(sorted_values, q), 0, len(sorted_values) - 1)
    return np.where(sorted_values[pos] == q, pos, _NONE)


class Launches:
    """GPU activity -> its launching API call: (pid, correlation) -> (tid, start).

    When several calls share a correlation (a runtime call and the driver call under
    it), the earliest, outermost one wins.
    """

    def __init__(self, pid: np.ndarray, corr: np.ndarray, tid: np.ndarray, start: np.ndarray):
        ok = corr != _NONE
        pid, corr, tid, start = pid[ok], corr[ok], tid[ok], start[ok]
        self.pids, pcode = dense_codes(pid)
        self.span = int(corr.max(initial=0)) + 1
        key = pcode * self.span + corr
        o = np.lexsort((start, key))
        key = key[o]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        sel = o[first]
        self.key, self.tid, self.start = key[first], tid[sel], start[sel]

    def find(self, pid: np.ndarray, corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(launch tid, launch start) per activity, -1 where no call matches."""
        p = _find(self.pids, pid)
        ok = (p >= 0) & (corr >= 0) & (corr < self.span)
        hit = np.where(ok, _find(self.key, np.where(ok, p * self.span + corr, -1)), _NONE)
        has = hit >= 0
        h = np.clip(hit, 0, None)
        tid = np.where(has, self.tid[h] if len(self.tid) else 0, _NONE)
        start = np.where(has, self.start[h] if len(self.start) else 0, _NONE)
        return tid, start


@dataclass
class Markers:
    """nvtx_ranges payload markers: zero-length marks right inside a step range."""

    pid: np.ndarray
    tid: np.ndarray
    time: np.ndarray
    text: list[str | None]


def _start_order(k_start: np.ndarray, k_end: np.ndarray) -> np.ndarray:
    """Positions sorted by start key, the longer range first at equal starts (so a
    parent precedes its children): one stable argsort, then only the tied runs are
    re-sorted by end (``lexsort`` on both full keys needs twice the memory)."""
    order = np.argsort(k_start, kind="stable")
    ks = k_start[order]
    tied = np.flatnonzero(ks[1:] == ks[:-1])
    del ks
    if len(tied):
        at = np.unique(np.concatenate([tied, tied + 1]))
        sub = order[at]
        order[at] = sub[np.lexsort((-k_end[sub], k_start[sub]))]
    return order


class RangeIndex:
    """The ranges usable as launch stacks (nested on a CPU thread, non-empty) of one
    input, with everything attribution derives from them, compact enough to keep
    while the input's rows stream past.

    Positions are the caller's order of the ranges; the innermost range open at a
    point is found through keys sorted by (thread, time)."""

    def __init__(
        self,
        pid: np.ndarray,
        tid: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        rank: np.ndarray,
        name_codes: np.ndarray,
        name_values: list[str],
        phase_map: PhaseMap,
        payload_pos: np.ndarray | None = None,
        payload_text: list[str | None] | None = None,
        markers: Markers | None = None,
    ):
        n = len(pid)
        self.n = n
        # Times -> offsets that keep every comparison between a query point and a
        # range boundary; combined with the thread into one int64 key.  Inputs are
        # dropped as soon as they are folded into keys (this index is what stays in
        # memory while a large export streams past).
        self.t_min = int(start.min(initial=0))
        t_max = int(end.max(initial=0))
        # Threads: dense code per (pid, tid) pair.
        self.t_pids, pcode = dense_codes(pid)
        del pid
        self.t_tids, tcode = dense_codes(tid)
        del tid
        pair = pcode * (len(self.t_tids) + 1) + tcode
        del pcode, tcode
        self.t_pairs, thread = dense_codes(pair)
        del pair
        n_threads = max(len(self.t_pairs), 1)
        self.t_span = t_max - self.t_min + 3
        self.bounds: np.ndarray | None = None
        if n_threads * self.t_span >= 2**62:  # huge clock span: rank among boundaries
            self.bounds = np.unique(np.concatenate([start, end]))
            self.t_span = len(self.bounds) + 2
        thread *= self.t_span
        self.k_start = thread + self._offset(start)
        del start
        self.k_end = thread + self._offset(end)
        del end, thread

        order = _start_order(self.k_start, self.k_end)
        ks = self.k_start[order]
        # Start times of the phase/step candidates, for numbering steps; then the
        # caller-order start keys go.
        name_id = np.where(name_codes < 0, len(name_values), name_codes).astype(np.int32)
        del name_codes
        full_values = [v if v is not None else "" for v in name_values] + [""]
        structural = np.array(
            [phase_map.phase_of(v) is not None or phase_map.is_step(v) for v in full_values], bool
        )
        steps_cand = np.flatnonzero(structural[name_id])
        steps_time = self.k_start[steps_cand] % self.t_span
        del self.k_start
        # Depth = ranges opened before me on my thread minus those closed by my start
        # (keys of other threads sort wholly before or after, so the counts cancel).
        ends = np.sort(self.k_end)
        depth_sorted = np.empty(n, np.int32)
        step = 1 << 22  # in slices: no full-length int64 temporaries
        for a in range(0, n, step):
            closed = np.searchsorted(ends, ks[a : a + step], side="right")
            depth_sorted[a : a + step] = np.maximum(np.arange(a, a + len(closed)) - closed, 0)
        del ends
        self.depth = np.empty(n, np.int16 if depth_sorted.max(initial=0) < 2**15 else np.int32)
        self.depth[order] = depth_sorted
        # Parents, one nesting level at a time: the last range of the level above
        # that started at or before me, on my thread.
        levels: list[np.ndarray] = []  # per depth: positions, by start
        self.parent = np.full(n, _NONE, np.int32)
        prev_keys: np.ndarray | None = None
        for d in range(int(depth_sorted.max(initial=-1)) + 1):
            sel = np.flatnonzero(depth_sorted == d)
            keys, pos = ks[sel], order[sel].astype(np.int32)
            del sel
            levels.append(pos)
            if d > 0 and prev_keys is not None:
                p_pos = levels[d - 1]
                at = np.searchsorted(prev_keys, keys, side="right") - 1
                cand = np.where(at >= 0, p_pos[np.clip(at, 0, None)], _NONE)
                c = np.clip(cand, 0, None)
                same = (cand >= 0) & (self.k_end[c] // self.t_span == keys // self.t_span)
                self.parent[pos] = np.where(same, cand, _NONE)
            prev_keys = keys
        del depth_sorted, prev_keys
        # What lookups keep: starts in order (with their positions), ends, parents.
        self.k_start_sorted = ks
        self.order = order.astype(np.int32)
        del order
        self.max_depth = len(levels)
        self._derive(
            levels, rank, name_id, full_values, phase_map, payload_pos, payload_text, markers,
            steps_cand, steps_time,
        )

    # ------------------------------------------------------------------ lookups

    def _offset(self, t: np.ndarray) -> np.ndarray:
        if self.bounds is not None:
            return np.searchsorted(self.bounds, t, side="right") + 1
        return np.clip(t - self.t_min + 1, 0, self.t_span - 1)

    def thread_of(self, pid: np.ndarray, tid: np.ndarray) -> np.ndarray:
        p, t = _find(self.t_pids, pid), _find(self.t_tids, tid)
        ok = (p >= 0) & (t >= 0)
        th = _find(self.t_pairs, np.where(ok, p * (len(self.t_tids) + 1) + t, -1))
        return np.where(ok, th, _NONE)

    def lookup(self, pid: np.ndarray, tid: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Position of the innermost range open on thread (pid, tid) at ``time``
        (start <= time < end), or -1.

        The range that started last at or before the point (the shortest, at equal
        starts) is the innermost one if it is still open; else the innermost open
        range is its nearest ancestor that is, found by climbing parents (at most
        the nesting depth, vectorised over all points)."""
        out = np.full(len(pid), _NONE, np.int64)
        if self.n == 0 or len(pid) == 0:
            return out
        th = self.thread_of(pid, tid)
        known = np.flatnonzero(th >= 0)
        if not len(known):
            return out
        q = th[known] * self.t_span + self._offset(time[known])
        at = np.searchsorted(self.k_start_sorted, q, side="right") - 1
        res = np.where(at >= 0, self.order[np.clip(at, 0, None)], _NONE).astype(np.int64)
        todo = np.arange(len(q))
        for _ in range(self.max_depth + 1):
            c = res[todo]
            bad = (c >= 0) & (self.k_end[np.clip(c, 0, None)] <= q[todo])
            todo = todo[bad]
            if not len(todo):
                break
            res[todo] = self.parent[res[todo]]
        out[known] = res
        return out

    # ------------------------------------------------------------------ derived

    def _derive(
        self,
        levels: list[np.ndarray],
        rank: np.ndarray,
        name_id: np.ndarray,
        full_values: list[str],
        phase_map: PhaseMap,
        payload_pos: np.ndarray | None,
        payload_text: list[str | None] | None,
        markers: Markers | None,
        cand: np.ndarray,
        cand_time: np.ndarray,
    ) -> None:
        n = self.n
        # The phase map sees the range text (less per-call counters); path and op
        # also drop module instance numbers.  Facts are computed per distinct name,
        # and per-range facts one nesting level at a time: the full-length arrays
        # are the results (and ph/st/op below), never per-name temporaries.
        self.name_values = [_clean(v) for v in full_values]
        d_phase = [phase_map.phase_of(v) for v in full_values]
        self.phase_values = sorted({p for p in d_phase if p is not None})
        d_phase_id = np.array(
            [self.phase_values.index(p) if p else _NONE for p in d_phase], np.int16
        )
        d_is_phase = d_phase_id >= 0
        d_step = _per_distinct(full_values, phase_map.is_step, bool)
        d_layer = _per_distinct(
            full_values, lambda v: _NONE if (x := phase_map.layer_of(v)) is None else x, np.int32
        )
        d_eligible = ~(
            d_is_phase | d_step | (d_layer != _NONE) | _per_distinct(full_values, phase_map.is_skip, bool)
        )

        # Inherit down the tree, one nesting level at a time (top-down): the phase,
        # step and operator ranges (positions) and the layer in force.  Paths are
        # interned: a path id per distinct (parent path, name) pair.
        self.path_values: list[str] = []
        path_id = np.full(n, _NONE, np.int32)
        ph = np.full(n, _NONE, np.int32)
        st = np.full(n, _NONE, np.int32)
        op = np.full(n, _NONE, np.int32)
        ly = np.full(n, _NONE, np.int32)
        nn = len(self.name_values) + 1
        path_of: dict[int, int] = {}  # (parent path + 1) * nn + name -> path id
        # Levels in slices of at most 2**21 ranges: temporaries stay small.
        for idx in (lv[a : a + (1 << 21)] for lv in levels for a in range(0, len(lv), 1 << 21)):
            nid = name_id[idx]
            par = self.parent[idx]
            has = par >= 0
            pc_ = np.clip(par, 0, None)
            parent_path = np.where(has, path_id[pc_], _NONE).astype(np.int64)
            ukey, inv = np.unique((parent_path + 1) * nn + nid, return_inverse=True)
            del parent_path
            ids = np.empty(len(ukey), np.int32)
            for j, key in enumerate(ukey.tolist()):  # distinct paths, not ranges
                if key not in path_of:
                    pp, leaf = key // nn - 1, self.name_values[key % nn]
                    path_of[key] = len(self.path_values)
                    self.path_values.append(leaf if pp < 0 else f"{self.path_values[pp]}/{leaf}")
                ids[j] = path_of[key]
            path_id[idx] = ids[inv.reshape(-1)]
            del ukey, inv
            is_phase = d_is_phase[nid]
            ph[idx] = np.where(is_phase, idx, np.where(has, ph[pc_], _NONE))
            st[idx] = np.where(d_step[nid], idx, np.where(has, st[pc_], _NONE))
            # An op never leaks from above the phase range into it.
            inherited = np.where(has & ~is_phase, op[pc_], _NONE)
            op[idx] = np.where(d_eligible[nid], idx, inherited)
            lv = d_layer[nid]
            ly[idx] = np.where(lv != _NONE, lv, np.where(has, ly[pc_], _NONE))

        # Payloads: the ranges' own, overridden by nvtx_ranges markers inside them.
        payload: dict[int, str] = {}
        if payload_pos is not None and payload_text is not None:
            payload = {
                int(p): t for p, t in zip(payload_pos.tolist(), payload_text, strict=True) if t
            }
        self.marker_payload: dict[int, str] = {}
        if markers is not None and len(markers.pid):
            inner = self.lookup(markers.pid, markers.tid, markers.time)
            for r, text in zip(inner.tolist(), markers.text, strict=True):
                if r >= 0:  # one marker per range: the last one wins
                    self.marker_payload[r] = _marker_json(text or "")
            payload.update(self.marker_payload)

        # Steps are numbered by step ranges when the trace has any inside or around
        # a phase range; otherwise by the phase ranges themselves.  Only phase/step
        # candidates (few) can number steps.
        c_step = d_step[name_id[cand]]
        c_phase = d_is_phase[name_id[cand]]
        around_phase = np.zeros(n, bool)
        inside = (ph >= 0) & (st >= 0)
        around_phase[st[inside]] = True
        del inside
        step_like = c_step & ((ph[cand] >= 0) | around_phase[cand])
        del around_phase
        if step_like.any():
            self.step_mode = "step"
            defining = st
        else:
            step_like = c_phase
            self.step_mode = "phase"
            defining = ph
        sd = cand[step_like]
        sd_time = cand_time[step_like]
        sd_rank = rank[sd]
        o = np.lexsort((sd_time, sd_rank))  # by rank, then time
        rk = sd_rank[o]
        newgrp = np.ones(len(rk), bool)
        newgrp[1:] = rk[1:] != rk[:-1]
        grp_first = np.maximum.accumulate(np.where(newgrp, np.arange(len(rk)), 0))
        # Batch size and tokens from the payload of the step-defining range, kept per
        # step-defining range (few) and reached through it.
        self.sd_batch = np.full(len(sd) + 1, np.nan)
        self.sd_tokens = np.full(len(sd) + 1, np.nan)
        for i, r in enumerate(sd.tolist()):
            text = payload.get(r)
            if text:
                self.sd_batch[i] = _payload_number(text, "batch_size")
                self.sd_tokens[i] = _payload_number(text, "tokens")
        # Per range: which step-defining range is in force (an index into sd) and
        # its step number; both reached through ``defining`` (a range position).
        sd_step = np.empty(len(sd), np.int32)
        sd_step[o] = np.arange(len(rk)) - grp_first
        # Per-range results in slices (no full-length int64 temporaries).
        self.defining_sd = np.empty(n, np.int32)
        self.step = np.empty(n, np.int32)
        self.op = np.empty(n, np.int32)
        self.phase = np.empty(n, np.int16)
        for a in range(0, n, 1 << 21):
            sl = slice(a, a + (1 << 21))
            d = defining[sl]
            if len(sd):
                dpos = np.clip(np.searchsorted(sd, d), 0, len(sd) - 1)
                ok = (d >= 0) & (sd[dpos] == d)
                self.defining_sd[sl] = np.where(ok, dpos, len(sd))
                self.step[sl] = np.where(ok, sd_step[dpos], _NONE)
            else:
                self.defining_sd[sl] = 0
                self.step[sl] = _NONE
            o_ = op[sl]
            self.op[sl] = np.where(o_ >= 0, name_id[np.clip(o_, 0, None)], _NONE)
            p_ = ph[sl]
            self.phase[sl] = np.where(p_ >= 0, d_phase_id[name_id[np.clip(p_, 0, None)]], _NONE)
        del defining, st, op, ph
        self.path = path_id
        self.layer = ly.astype(np.int16) if ly.max(initial=0) < 2**15 else ly
        self._dicts: dict[str, pa.Array] = {}

    def dictionary(self, which: str) -> pa.Array:
        """The dictionary of the ``path``, ``op`` or ``phase`` codes, built once."""
        if which not in self._dicts:
            values = {"path": self.path_values, "op": self.name_values, "phase": self.phase_values}[which]
            self._dicts[which] = pa.array(values if values else [""], pa.string())
        return self._dicts[which]


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


def _dict_column(idx: np.ndarray, dictionary: pa.Array) -> pa.Array:
    """A dictionary-encoded string column from codes into ``dictionary`` (-1 = NULL)."""
    mask = idx < 0
    return pa.DictionaryArray.from_arrays(
        pa.array(np.where(mask, 0, idx).astype(np.int32), mask=mask), dictionary
    )


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


def _kind_mask(col: pa.ChunkedArray | pa.Array, kinds: tuple[str, ...]) -> np.ndarray:
    m = pc.is_in(col, value_set=pa.array(list(kinds)))
    return np.asarray(pc.fill_null(m, False).to_numpy(zero_copy_only=False), bool)


class CaptureOps:
    """Operator and layer open where each replayed CUDA graph node was captured.

    Each (pid, graph node) of a replayed kernel is followed back to the node that was
    captured (instantiation clones it: ``original_graph_node_id``), whose creation
    event gives the capturing thread and time; the range index gives the stack there.
    Joins run per distinct node, never per kernel."""

    def __init__(self, pid: np.ndarray, node: np.ndarray, graph_nodes: pa.Table, index: RangeIndex):
        pairs = np.stack([np.asarray(pid, np.int64), np.asarray(node, np.int64)], axis=1)
        pairs = np.unique(pairs.reshape(-1, 2), axis=0)  # distinct, sorted by (pid, node)
        n_pid, n_node = pairs[:, 0], pairs[:, 1]

        def ints(name: str) -> tuple[np.ndarray, np.ndarray]:
            col = graph_nodes.column(name)
            valid = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), bool)
            return np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), np.int64), valid

        g_pid, has_pid = ints("pid")
        g_node, has_node = ints("graph_node_id")
        g_orig, g_has_orig = ints("original_graph_node_id")
        g_tid, g_has_tid = ints("tid")
        g_start, g_has_start = ints("start_ns")
        named = has_pid & has_node
        if not named.all():
            g_pid, g_node, g_orig, g_has_orig = g_pid[named], g_node[named], g_orig[named], g_has_orig[named]
            g_tid, g_has_tid, g_start = g_tid[named], g_has_tid[named], g_start[named]
            g_has_start = g_has_start[named]
        # A node id can have two creation events (e.g. the executable graph's node is
        # recorded once bare, once as a clone): keep the one that names its original
        # (the smallest original id), else the first in the table.
        okey = np.where(g_has_orig, g_orig, np.iinfo(np.int64).max)
        order = np.lexsort((np.arange(len(g_pid)), okey, g_node, g_pid))
        sp, sn = g_pid[order], g_node[order]
        first = np.ones(len(order), bool)
        first[1:] = (sp[1:] != sp[:-1]) | (sn[1:] != sn[:-1])
        keep = order[first]
        e_pid, e_node = g_pid[keep], g_node[keep]

        def event_of(q_node: np.ndarray) -> np.ndarray:
            """Row in ``keep`` of each (n_pid, q_node), -1 where there is none."""
            both = np.concatenate([np.stack([e_pid, e_node], 1), np.stack([n_pid, q_node], 1)])
            _, inv = np.unique(both.reshape(-1, 2), axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            at = np.full(int(inv.max()) + 1 if len(inv) else 0, -1, np.int64)
            at[inv[: len(keep)]] = np.arange(len(keep))
            return at[inv[len(keep) :]]

        look = n_node.copy()
        for _ in range(4):  # clone of a clone is possible; chains are short
            j = event_of(look)
            k = keep[np.clip(j, 0, None)] if len(keep) else j
            follow = (j >= 0) & g_has_orig[k] & (g_orig[k] != look) if len(keep) else j >= 0
            if not follow.any():
                break
            look = np.where(follow, g_orig[k], look)
        j = event_of(look)
        k = keep[np.clip(j, 0, None)] if len(keep) else j
        ok = (j >= 0) & g_has_tid[k] & g_has_start[k] if len(keep) else np.zeros(len(j), bool)
        r = np.full(len(n_pid), _NONE, np.int64)
        r[ok] = index.lookup(n_pid[ok], g_tid[k][ok], g_start[k][ok])
        has = r >= 0
        rc = np.clip(r, 0, None)
        self.pids, pcode = dense_codes(n_pid)
        self.span = int(n_node.max()) + 1 if len(n_node) else 1
        self.key = pcode * self.span + n_node  # sorted
        self.op = np.where(has, index.op[rc], _NONE)
        self.layer = np.where(has, index.layer[rc], _NONE)

    def find(self, pid: np.ndarray, node: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _find(self.pids, pid)
        ok = (p >= 0) & (node >= 0) & (node < self.span)
        hit = np.where(ok, _find(self.key, np.where(ok, p * self.span + node, -1)), _NONE)
        h = np.clip(hit, 0, None)
        return (
            np.where(hit >= 0, self.op[h], _NONE) if len(self.op) else hit,
            np.where(hit >= 0, self.layer[h], _NONE) if len(self.layer) else hit,
        )


def label(
    index: RangeIndex | None,
    launches: Launches | None,
    capture: CaptureOps | None,
    *,
    kind: pa.Array | pa.ChunkedArray,
    pid: np.ndarray,
    tid: np.ndarray,
    start: np.ndarray,
    corr: np.ndarray,
    range_pos: np.ndarray,
    graph_node: np.ndarray | None = None,
) -> dict[str, pa.Array]:
    """The attribution columns for a batch of rows.

    GPU activities are labelled through their launching call (``launches``); rows
    that are indexed ranges (``range_pos`` >= 0) carry their own stack; every other
    row on a CPU thread is labelled by the stack of its thread at its start.
    """
    n = len(pid)
    is_gpu = _kind_mask(kind, GPU_KINDS)
    launch_tid = np.full(n, _NONE, np.int64)
    launch_ns = np.full(n, _NONE, np.int64)
    g = np.flatnonzero(is_gpu & (corr != _NONE))
    if launches is not None and len(g):
        launch_tid[g], launch_ns[g] = launches.find(pid[g], corr[g])
    pos = np.full(n, _NONE, np.int64)
    if index is not None and index.n:
        own = range_pos >= 0
        pos[own] = range_pos[own]
        q = np.flatnonzero(~own & np.where(is_gpu, launch_tid != _NONE, tid != _NONE))
        qg = is_gpu[q]
        pos[q] = index.lookup(
            pid[q], np.where(qg, launch_tid[q], tid[q]), np.where(qg, launch_ns[q], start[q])
        )
    has = pos >= 0
    pc_ = np.clip(pos, 0, None)

    def take(a: np.ndarray | None) -> np.ndarray:
        if a is None or not len(a):
            return np.full(n, _NONE, np.int64)
        return np.where(has, a[pc_], _NONE).astype(np.int64)

    if index is not None and index.n:
        path, op, phase = take(index.path), take(index.op), take(index.phase)
        step, layer = take(index.step), take(index.layer)
        sd = np.where(has, index.defining_sd[pc_], len(index.sd_batch) - 1)
        batch, tokens = index.sd_batch[sd], index.sd_tokens[sd]
        depth = np.where(range_pos >= 0, index.depth[np.clip(range_pos, 0, None)], _NONE)
        if capture is not None and graph_node is not None:
            # The operator (and layer) open when the node was captured wins over the
            # launch stack, which holds only the cudaGraphLaunch; phase and step stay
            # those of the launch.
            gsel = np.flatnonzero(is_gpu & (graph_node != _NONE))
            if len(gsel):
                cop, cly = capture.find(pid[gsel], graph_node[gsel])
                op[gsel] = np.where(cop >= 0, cop, op[gsel])
                layer[gsel] = np.where(cly >= 0, cly, layer[gsel])
        dicts = {k: index.dictionary(k) for k in ("path", "op", "phase")}
    else:
        path = op = phase = step = layer = depth = np.full(n, _NONE, np.int64)
        batch = tokens = np.full(n, np.nan)
        dicts = {k: pa.array([""], pa.string()) for k in ("path", "op", "phase")}

    def int_arr(a: np.ndarray, t: pa.DataType) -> pa.Array:
        return pa.array(a, type=t, mask=a == _NONE)

    def float_int_arr(a: np.ndarray) -> pa.Array:
        m = np.isnan(a)
        return pa.array(np.where(m, 0, a).astype(np.int64), type=pa.int64(), mask=m)

    return {
        "depth": int_arr(depth, pa.int32()),
        "path": _dict_column(path, dicts["path"]),
        "op": _dict_column(op, dicts["op"]),
        "phase": _dict_column(phase, dicts["phase"]),
        "step": int_arr(step, pa.int32()),
        "layer": int_arr(layer, pa.int32()),
        "batch_size": float_int_arr(batch),
        "tokens": float_int_arr(tokens),
        "launch_tid": int_arr(launch_tid, pa.int64()),
        "launch_ns": int_arr(launch_ns, pa.int64()),
    }


def gpu_phase_step(
    index: RangeIndex | None, launches: Launches | None, pid: np.ndarray, corr: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(phase code into ``index.phase_values``, step), -1 for none, of GPU activities:
    what :func:`label` gives them, without the other columns (a narrow pass over
    every GPU activity of an export, before its rows stream: see tracekit.busy)."""
    n = len(pid)
    none = np.full(n, _NONE, np.int64)
    if index is None or not index.n or launches is None or n == 0:
        return none, none.copy()
    launch_tid, launch_ns = none.copy(), none.copy()
    g = np.flatnonzero(corr != _NONE)
    launch_tid[g], launch_ns[g] = launches.find(pid[g], corr[g])
    q = np.flatnonzero(launch_tid != _NONE)
    pos = none.copy()
    pos[q] = index.lookup(pid[q], launch_tid[q], launch_ns[q])
    has = pos >= 0
    pc_ = np.clip(pos, 0, None)
    phase = np.where(has, index.phase[pc_], _NONE).astype(np.int64)
    step = np.where(has, index.step[pc_], _NONE).astype(np.int64)
    return phase, step


def range_names(names: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Range texts as (codes, distinct base names) for :class:`RangeIndex`."""
    codes, values = _encode(base_names(names))
    return codes, [v if v is not None else "" for v in values]


def attribute(table: pa.Table, phase_map: PhaseMap, graph_nodes: pa.Table | None = None) -> Attribution:
    """Fill ``depth``, ``path``, ``op``, ``phase``, ``step``, ``layer``,
    ``batch_size``, ``tokens``, ``launch_tid`` and ``launch_ns`` on a whole table.

    GPU activities are attributed through their launching call; CPU events
    (runtime calls, ranges, operators) through their own thread at their start.
    Nsight inputs stream through the same pieces (:class:`RangeIndex`,
    :class:`Launches`, :func:`label`) batch by batch.  Worked examples on real
    traces: tests/test_attribute.py.
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
    is_range_kind = _kind_mask(kcol, ("range",))
    # nvtx_ranges payload markers (zero-length, right inside a step range): attached
    # to the range around them as JSON, then dropped.
    is_marker = (
        is_range_kind
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
    is_range = is_range_kind & nested & (tid != _NONE) & (device == _NONE) & (end > start)

    rt = np.flatnonzero(is_runtime)
    launches = Launches(pid[rt], corr[rt], tid[rt], start[rt]) if len(rt) else None

    r_rows = np.flatnonzero(is_range)
    index: RangeIndex | None = None
    capture: CaptureOps | None = None
    range_pos = np.full(n, _NONE, np.int64)
    if len(r_rows):
        codes, values = range_names(table.column("name").take(pa.array(r_rows)))
        payload_pos = payload_text = None
        if "payload" in cols:
            pl = table.column("payload").take(pa.array(r_rows))
            valid = np.asarray(pl.is_valid().to_numpy(zero_copy_only=False), bool)
            payload_pos = np.flatnonzero(valid)
            payload_text = pl.take(pa.array(payload_pos)).to_pylist() if len(payload_pos) else []
        m = np.flatnonzero(is_marker)
        markers = Markers(
            pid[m], tid[m], start[m], table.column("name").take(pa.array(m)).to_pylist()
        )
        index = RangeIndex(
            pid[r_rows], tid[r_rows], start[r_rows], end[r_rows], rank[r_rows],
            codes, values, phase_map, payload_pos, payload_text, markers,
        )
        range_pos[r_rows] = np.arange(len(r_rows))
        if graph_nodes is not None and graph_nodes.num_rows and "graph_node_id" in cols:
            gn = col("graph_node_id", _NONE)
            gsel = np.flatnonzero(_kind_mask(kcol, GPU_KINDS) & (gn != _NONE))
            if len(gsel):
                capture = CaptureOps(pid[gsel], gn[gsel], graph_nodes, index)
        if index.marker_payload:
            table = _set_payload(table, r_rows, index)
    gn_all = col("graph_node_id", _NONE) if "graph_node_id" in cols else None
    out = label(
        index, launches, capture, kind=kcol, pid=pid, tid=tid, start=start, corr=corr,
        range_pos=range_pos, graph_node=gn_all,
    )
    for name, arr in out.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, arr)
        else:
            table = table.append_column(name, arr)
    kept = None
    if is_marker.any():
        kept = pa.array(~is_marker)
        table = table.filter(kept)
    return Attribution(
        table=table, step_mode=index.step_mode if index is not None else "phase", kept=kept
    )


def marker_updates(index: RangeIndex) -> tuple[np.ndarray, list[str]]:
    """Positions of the ranges whose payload a marker set, and the JSON, sorted."""
    items = sorted(index.marker_payload.items())
    return np.array([p for p, _ in items], np.int64), [v for _, v in items]


def _set_payload(table: pa.Table, r_rows: np.ndarray, index: RangeIndex) -> pa.Table:
    pos, values = marker_updates(index)
    target = r_rows[pos]
    mask = np.zeros(table.num_rows, bool)
    mask[target] = True
    current = (
        table.column("payload").combine_chunks().cast(pa.string())
        if "payload" in table.column_names
        else pa.nulls(table.num_rows, pa.string())
    )
    new = pc.replace_with_mask(current, pa.array(mask), pa.array(values, pa.string()))
    if "payload" in table.column_names:
        return table.set_column(table.column_names.index("payload"), "payload", new)
    return table.append_column("payload", new)
