"""The ingest-time columns that need every GPU activity of a file, for an input whose
rows stream past in batches (Nsight exports): ``busy_ns`` and ``step_busy_ns``
(:mod:`tracekit.busy`), ``exposed_ns`` (:mod:`tracekit.exposed`) and
``launch_first`` (:mod:`tracekit.launches`).

They are computed up front from narrow columns of all GPU activities, given in the
order the batches will bring those rows; each batch then takes its slice.  Whole
tables (Kineto files) call the ``*_column(s)`` functions of those modules instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracekit.busy import busy_arrays, group_key
from tracekit.exposed import exposed_arrays
from tracekit.launches import LAST, launch_first_array
from tracekit.schema import GPU_KINDS


class StreamedColumns:
    """``busy_ns``, ``step_busy_ns``, ``exposed_ns`` and ``launch_first`` of the GPU
    activities of one input, from narrow columns in the order the batches will bring
    those rows (``kinds``: (kind, rows) runs); :meth:`columns` hands each batch its
    slice, :meth:`finish` checks that every value was handed out.  What stays is 17
    bytes per GPU activity and 16 per communication kernel.

    ``start``/``end`` hold ``null`` for NULL, ``pid``/``device``/``corr`` -1;
    ``is_comm`` marks communication kernels and ``is_compute`` the other kernels
    (classified as the batches will be); ``rank_of(pid)`` gives ranks (-1 unknown)
    and ``phase_step(pid, corr)`` phase codes and steps (-1 none), as labelling the
    batches will.
    """

    def __init__(
        self,
        kinds: list[tuple[str, int]],
        start: np.ndarray,
        end: np.ndarray,
        pid: np.ndarray,
        device: np.ndarray,
        corr: np.ndarray,
        is_comm: np.ndarray,
        is_compute: np.ndarray,
        rank_of: Callable[[np.ndarray], np.ndarray],
        phase_step: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
        null: int,
    ):
        n = len(start)
        if sum(r for _, r in kinds) != n or len({k for k, _ in kinds}) != len(kinds):
            raise RuntimeError(
                "internal error: GPU rows of the narrow pass do not match their kinds"
            )
        rank = np.empty(n, np.int32)
        phase = np.empty(n, np.int32)
        step = np.empty(n, np.int32)
        chunk = 1 << 20  # labelling temporaries stay small
        for a in range(0, n, chunk):
            p = pid[a : a + chunk].astype(np.int64)
            no_pid = p < 0
            p[no_pid] = 0  # as labelling fills a NULL pid
            ph, st = phase_step(p, corr[a : a + chunk])
            phase[a : a + chunk], step[a : a + chunk] = ph, st
            rank[a : a + chunk] = np.where(no_pid, -1, rank_of(p))
        ok = (start != null) & (end != null)
        every = bool(ok.all())  # NULL times (never seen in exports) get no value
        sel = slice(None) if every else np.flatnonzero(ok)
        step_ok = step[sel] >= 0
        busy, step_busy = busy_arrays(
            start[sel], end[sel], rank[sel], device[sel], phase[sel], step[sel], step_ok
        )
        del phase, step
        step_busy[~step_ok] = -1
        if every:
            self.busy, self.step_busy = busy, step_busy
        else:
            self.busy = np.full(n, -1, np.int64)
            self.step_busy = np.full(n, -1, np.int64)
            self.busy[sel], self.step_busy[sel] = busy, step_busy
        del busy, step_busy
        # Exposed time: (rank, device) groups of kernels whose rank and device are
        # known; a NULL start or end gives a NULL duration, hence no value.
        known = (rank >= 0) & (device >= 0)
        group = np.where(known, group_key(rank, device), -1)
        del rank, known
        comm_rows, exposed = exposed_arrays(start, end, end - start, group, is_comm, is_compute, ok)
        del group
        keep = ok[comm_rows]
        self.comm_rows, self.exposed = comm_rows[keep], exposed[keep]
        self.launch_first = launch_first_array(
            pid.astype(np.int64), corr, np.where(start != null, start, LAST), corr != -1
        )
        # Where each kind's rows sit in these arrays, and how many were handed out.
        self.first: dict[str, int] = {}
        self.counts = dict.fromkeys(GPU_KINDS, 0)
        at = 0
        for kind, rows in kinds:
            self.first[kind], self.counts[kind] = at, rows
            at += rows
        self.taken = dict.fromkeys(GPU_KINDS, 0)

    def columns(self, kind: pa.Array | pa.ChunkedArray) -> dict[str, pa.Array]:
        """The columns of the next batch (its ``kind`` column): the next values of
        each GPU kind, in row order, NULL on other rows."""
        n = len(kind)
        busy = np.full(n, -1, np.int64)
        step_busy = np.full(n, -1, np.int64)
        exposed = np.zeros(n, np.int64)
        has_exposed = np.zeros(n, bool)
        first = np.full(n, -1, np.int8)
        for k in GPU_KINDS:
            hit = pc.fill_null(pc.equal(kind, k), False)
            rows = np.flatnonzero(np.asarray(hit.to_numpy(zero_copy_only=False), bool))
            if not len(rows):
                continue
            a = self.first.get(k, 0) + self.taken[k]
            b = a + len(rows)
            self.taken[k] += len(rows)
            if self.taken[k] > self.counts[k]:
                raise RuntimeError(
                    f"internal error: the batches bring more {k} rows than the narrow GPU "
                    f"pass read ({self.taken[k]} > {self.counts[k]})"
                )
            busy[rows] = self.busy[a:b]
            step_busy[rows] = self.step_busy[a:b]
            first[rows] = self.launch_first[a:b]
            lo, hi = np.searchsorted(self.comm_rows, [a, b])
            at = rows[self.comm_rows[lo:hi] - a]
            exposed[at] = self.exposed[lo:hi]
            has_exposed[at] = True
        return {
            "busy_ns": pa.array(busy, pa.int64(), mask=busy < 0),
            "step_busy_ns": pa.array(step_busy, pa.int64(), mask=step_busy < 0),
            "exposed_ns": pa.array(exposed, pa.int64(), mask=~has_exposed),
            "launch_first": pa.array(first == 1, pa.bool_(), mask=first < 0),
        }

    def finish(self) -> None:
        """Check that the batches brought exactly the GPU rows the pass read."""
        for k in GPU_KINDS:
            if self.taken[k] != self.counts[k]:
                raise RuntimeError(
                    f"internal error: the batches brought {self.taken[k]} {k} rows, the "
                    f"narrow GPU pass read {self.counts[k]}"
                )
