-- name: step_series
-- description: One row per run, rank and step, in time order: when the step started,
--   its wall time on the CPU, its GPU span, busy and kernel time, and the batch size
--   and token count where the step range's payload carries them. Plot wall_ms or
--   gpu_span_ms against start_s to see warm-up, stragglers and batch effects.
-- column: run  run label
-- column: rank  process rank
-- column: phase  phase of the step
-- column: step  per-rank step index (from 0)
-- column: start_s  start of the step (s) from the run's first event: the step range's start, else its first GPU activity
-- column: wall_ms  wall time (ms): duration of the step range on the CPU thread; NULL without a step range
-- column: gpu_span_ms  GPU span (ms): first start to last end of the step's kernels, memcpy and memset
-- column: gpu_busy_ms  busy time (ms): union of the step's GPU activity intervals per device, summed over devices
-- column: kernel_ms  kernel time (ms): sum of dur_ns of the step's kernels
-- column: kernels  kernels of the step (count)
-- column: batch_size  batch size from the step range payload; NULL where not recorded
-- column: tokens  tokens from the step range payload; NULL where not recorded
WITH gpu AS (
    SELECT run, rank, device, phase, step, kind, start_ns, end_ns, dur_ns, batch_size, tokens,
           step_busy_ns
    FROM events
    WHERE kind IN ('kernel', 'memcpy', 'memset') AND step IS NOT NULL
),
-- The step range is the outermost range row that carries a (phase, step).
step_rows AS (
    SELECT run, rank, phase, step, start_ns, end_ns, batch_size, tokens
    FROM events
    WHERE kind = 'range' AND phase IS NOT NULL AND step IS NOT NULL
    QUALIFY COALESCE(depth, 0) = MIN(COALESCE(depth, 0)) OVER (PARTITION BY run, rank, phase, step)
),
step_wall AS (
    SELECT run, rank, phase, step, MIN(start_ns) AS start_ns,
           MAX(end_ns) - MIN(start_ns) AS wall_ns,
           MAX(batch_size) AS batch_size, MAX(tokens) AS tokens
    FROM step_rows
    GROUP BY run, rank, phase, step
),
-- Busy time of a step = length of the union of its intervals per device: the sum of
-- step_busy_ns, each activity's part past the earlier-starting activities of its
-- (rank, device, phase, step), computed at ingest.  Activities without it (runs
-- ingested before the column existed) get the same part here, in one sorted pass over
-- them alone: max(0, end - max(start, reach)), reach = the latest end so far.
gpu_busy AS (
    SELECT run, rank, phase, step, kind, start_ns, end_ns, dur_ns, batch_size, tokens,
           step_busy_ns AS busy_ns
    FROM gpu
    WHERE step_busy_ns IS NOT NULL
    UNION ALL
    SELECT run, rank, phase, step, kind, start_ns, end_ns, dur_ns, batch_size, tokens,
           GREATEST(end_ns - GREATEST(start_ns, COALESCE(MAX(end_ns) OVER (
               PARTITION BY run, rank, device, phase, step ORDER BY start_ns
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), start_ns)), 0)
    FROM gpu
    WHERE step_busy_ns IS NULL
),
step_gpu AS (
    SELECT run, rank, phase, step, MIN(start_ns) AS gpu_start_ns,
           MAX(end_ns) - MIN(start_ns) AS span_ns,
           SUM(busy_ns) AS busy_ns,
           COALESCE(SUM(dur_ns) FILTER (WHERE kind = 'kernel'), 0) AS kernel_ns,
           COUNT(*) FILTER (WHERE kind = 'kernel') AS kernels,
           MAX(batch_size) AS batch_size, MAX(tokens) AS tokens
    FROM gpu_busy
    GROUP BY run, rank, phase, step
),
-- Time zero of a run: its first event of any kind, for the runs that have steps (the
-- scan of every event is skipped when no run has one).
run_start AS (
    SELECT run, MIN(start_ns) AS t0_ns
    FROM events
    WHERE run IN (SELECT run FROM step_gpu UNION ALL SELECT run FROM step_wall)
    GROUP BY run
)
SELECT run, rank, phase, step,
       ROUND((COALESCE(w.start_ns, g.gpu_start_ns) - r.t0_ns) / 1e9, 6) AS start_s,
       ROUND(w.wall_ns / 1e6, 3) AS wall_ms,
       ROUND(g.span_ns / 1e6, 3) AS gpu_span_ms,
       ROUND(g.busy_ns / 1e6, 3) AS gpu_busy_ms,
       ROUND(g.kernel_ns / 1e6, 3) AS kernel_ms,
       COALESCE(g.kernels, 0) AS kernels,
       COALESCE(w.batch_size, g.batch_size) AS batch_size,
       COALESCE(w.tokens, g.tokens) AS tokens
FROM step_gpu g
FULL OUTER JOIN step_wall w USING (run, rank, phase, step)
JOIN run_start r USING (run)
ORDER BY run, rank, start_s, step
