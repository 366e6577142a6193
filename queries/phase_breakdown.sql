-- name: phase_breakdown
-- description: Per run, rank and phase: steps, wall time per step, GPU busy time,
--   kernel time, communication time and share, GPU idle share inside steps, and
--   kernels and launches per step. GPU work without a phase is the row
--   phase = '(no phase)'. Phases are ordered by their first GPU activity.
-- column: run  run label
-- column: rank  process rank
-- column: phase  phase of the step that launched the work; '(no phase)' = unattributed
-- column: steps  step instances of the phase on this rank (step ranges, else distinct step numbers of its GPU work)
-- column: wall_ms_mean  wall time per step, mean (ms): duration of the step range on the CPU thread
-- column: wall_ms_p50  wall time per step, median (ms)
-- column: wall_ms_p90  wall time per step, 90th percentile (ms)
-- column: wall_ms_p99  wall time per step, 99th percentile (ms)
-- column: gpu_busy_ms  busy time (ms): length of the union of the phase's kernel, memcpy and memset intervals, per device, summed over the rank's devices
-- column: kernel_ms  kernel time (ms): sum of dur_ns of the phase's kernels (overlapping streams count twice)
-- column: copy_ms  memcpy and memset time (ms): sum of their dur_ns
-- column: comm_ms  communication kernel time (ms): sum of dur_ns of kernels with category 'communication'
-- column: comm_pct  comm_ms as a share of kernel_ms (%)
-- column: gpu_idle_pct  GPU idle share inside steps (%): 100 × (1 − busy / GPU span), both summed over the phase's steps; GPU span of a step = first start to last end of its activities on a device
-- column: kernels_per_step  kernels per step (count)
-- column: launches_per_step  launching API calls per step (distinct (pid, correlation) pairs of the step's GPU work; a CUDA graph launch counts once)
-- gpu is read by several parts; NOT MATERIALIZED: scanning the Parquet again is cheaper
-- than materializing every GPU row. Phases are grouped as they are (NULL is a group of
-- its own) and named '(no phase)' at the end, on a few rows instead of every activity.
WITH gpu AS NOT MATERIALIZED (
    SELECT run, rank, device, phase, step, kind, category,
           pid, correlation, start_ns, end_ns, dur_ns, busy_ns, step_busy_ns, launch_first
    FROM events
    WHERE kind IN ('kernel', 'memcpy', 'memset')
),
-- The step range is the outermost range row that carries a (phase, step).
step_rows AS (
    SELECT run, rank, phase, step, start_ns, end_ns
    FROM events
    WHERE kind = 'range' AND phase IS NOT NULL AND step IS NOT NULL
    QUALIFY COALESCE(depth, 0) = MIN(COALESCE(depth, 0)) OVER (PARTITION BY run, rank, phase, step)
),
step_wall AS (
    SELECT run, rank, phase, step, MAX(end_ns) - MIN(start_ns) AS wall_ns
    FROM step_rows
    GROUP BY run, rank, phase, step
),
wall AS (
    SELECT run, rank, phase, COUNT(*) AS range_steps,
           AVG(wall_ns) AS mean_ns,
           quantile_cont(wall_ns, 0.5) AS p50_ns,
           quantile_cont(wall_ns, 0.9) AS p90_ns,
           quantile_cont(wall_ns, 0.99) AS p99_ns
    FROM step_wall
    GROUP BY run, rank, phase
),
-- Busy time = length of the union of a device's intervals of one phase: the sum of
-- busy_ns, each activity's part past the earlier-starting activities of its (rank,
-- device, phase), computed at ingest.  Activities without it (runs ingested before the
-- column existed) get the same part here, in one sorted pass over them alone:
-- max(0, end - max(start, reach)), reach = the latest end so far.
gpu_busy AS (
    SELECT run, rank, phase, kind, category, start_ns, dur_ns, busy_ns, launch_first
    FROM gpu
    WHERE busy_ns IS NOT NULL
    UNION ALL
    SELECT run, rank, phase, kind, category, start_ns, dur_ns,
           GREATEST(end_ns - GREATEST(start_ns, COALESCE(MAX(end_ns) OVER (
               PARTITION BY run, rank, device, phase ORDER BY start_ns
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), start_ns)), 0),
           launch_first
    FROM gpu
    WHERE busy_ns IS NULL
),
-- The same per step (step_busy_ns), for the idle share inside each step's GPU span.
step_busy AS (
    SELECT run, rank, device, phase, step, SUM(busy_ns) AS busy_ns,
           MAX(end_ns) - MIN(start_ns) AS span_ns
    FROM (
        SELECT run, rank, device, phase, step, start_ns, end_ns, step_busy_ns AS busy_ns
        FROM gpu
        WHERE step IS NOT NULL AND step_busy_ns IS NOT NULL
        UNION ALL
        SELECT run, rank, device, phase, step, start_ns, end_ns,
               GREATEST(end_ns - GREATEST(start_ns, COALESCE(MAX(end_ns) OVER (
                   PARTITION BY run, rank, device, phase, step ORDER BY start_ns
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), start_ns)), 0)
        FROM gpu
        WHERE step IS NOT NULL AND step_busy_ns IS NULL
    )
    GROUP BY run, rank, device, phase, step
),
-- Step instances seen on the GPU (where the phase has no step ranges) are counted here,
-- on one row per step and device, not over every activity.
idle AS (
    SELECT run, rank, phase, 100.0 * (1 - SUM(busy_ns) / SUM(span_ns)) AS idle_pct,
           COUNT(DISTINCT step) AS gpu_steps
    FROM step_busy
    GROUP BY run, rank, phase
),
-- Launches: distinct launching calls (pid, correlation). launch_first, set at ingest,
-- is TRUE on one activity of each call (all of them share rank, phase and step, being
-- attributed through it), so its count is the distinct count.
totals AS (
    SELECT run, rank, phase,
           MIN(start_ns) AS first_ns,
           SUM(busy_ns) AS busy_ns,
           COALESCE(SUM(dur_ns) FILTER (WHERE kind = 'kernel'), 0) AS kernel_ns,
           COALESCE(SUM(dur_ns) FILTER (WHERE kind <> 'kernel'), 0) AS copy_ns,
           COALESCE(SUM(dur_ns) FILTER (WHERE kind = 'kernel' AND category = 'communication'), 0) AS comm_ns,
           COUNT(*) FILTER (WHERE kind = 'kernel') AS kernels,
           COUNT(*) FILTER (WHERE launch_first) AS first_launches
    FROM gpu_busy
    GROUP BY run, rank, phase
),
-- Activities without launch_first (runs ingested before the column existed): their
-- distinct (pid, correlation) pairs, counted as 64-bit masks of the correlation ids per
-- (pid, correlation / 64), far fewer groups than pairs. The null counts of launch_first
-- let DuckDB skip every row group of a new run here.
launch_bits AS (
    SELECT run, rank, phase, pid, correlation >> 6 AS hi,
           bit_or(1::UBIGINT << (correlation & 63)::UBIGINT) AS bits
    FROM gpu
    WHERE correlation IS NOT NULL AND launch_first IS NULL
    GROUP BY run, rank, phase, pid, correlation >> 6
),
launch_count AS (
    SELECT run, rank, phase, SUM(bit_count(bits)) AS launches
    FROM launch_bits
    GROUP BY run, rank, phase
),
-- Joined on phase with NULL = NULL: the unattributed work is one group throughout
-- (a NULL rank matches nothing, as with USING).
joined AS (
    SELECT t.*, t.first_launches + COALESCE(l.launches, 0) AS launches,
           w.mean_ns, w.p50_ns, w.p90_ns, w.p99_ns, i.idle_pct,
           COALESCE(NULLIF(w.range_steps, 0), i.gpu_steps, 0) AS steps
    FROM totals t
    LEFT JOIN wall w
        ON w.run = t.run AND w.rank = t.rank AND w.phase IS NOT DISTINCT FROM t.phase
    LEFT JOIN idle i
        ON i.run = t.run AND i.rank = t.rank AND i.phase IS NOT DISTINCT FROM t.phase
    LEFT JOIN launch_count l
        ON l.run = t.run AND l.rank = t.rank AND l.phase IS NOT DISTINCT FROM t.phase
)
SELECT run, rank, COALESCE(phase, '(no phase)') AS phase, steps,
       ROUND(mean_ns / 1e6, 3) AS wall_ms_mean,
       ROUND(p50_ns / 1e6, 3) AS wall_ms_p50,
       ROUND(p90_ns / 1e6, 3) AS wall_ms_p90,
       ROUND(p99_ns / 1e6, 3) AS wall_ms_p99,
       ROUND(busy_ns / 1e6, 3) AS gpu_busy_ms,
       ROUND(kernel_ns / 1e6, 3) AS kernel_ms,
       ROUND(copy_ns / 1e6, 3) AS copy_ms,
       ROUND(comm_ns / 1e6, 3) AS comm_ms,
       ROUND(100.0 * comm_ns / NULLIF(kernel_ns, 0), 2) AS comm_pct,
       ROUND(idle_pct, 2) AS gpu_idle_pct,
       ROUND(kernels / NULLIF(steps, 0), 1) AS kernels_per_step,
       ROUND(launches / NULLIF(steps, 0), 1) AS launches_per_step
FROM joined
ORDER BY run, rank, first_ns
