-- name: category_share
-- description: Category share of GPU time per run and phase, over all ranks: gemm,
--   attention, communication, norm, elementwise, reduce, memory, other. GPU time here
--   counts kernels, memcpy and memset (memcpy and memset are category 'memory');
--   shares sum to 100% per phase.
-- column: run  run label
-- column: phase  phase of the launching step; '(no phase)' = unattributed
-- column: category  category of the GPU activity; '(none)' = unclassified
-- column: activities  kernels, memcpy and memset of the category (count, all ranks)
-- column: gpu_ms  GPU time (ms): sum of dur_ns of the category's kernels, memcpy and memset, all ranks
-- column: share_pct  gpu_ms as a share of the phase's GPU time (%)
-- column: gpu_ms_per_step  GPU time per step (ms): gpu_ms / step instances of the phase summed over ranks; NULL without steps
WITH g AS (
    SELECT run, rank, COALESCE(phase, '(no phase)') AS phase, step,
           COALESCE(category, '(none)') AS category, dur_ns, start_ns
    FROM events
    WHERE kind IN ('kernel', 'memcpy', 'memset')
),
-- Step instances per phase: distinct (rank, step) pairs, counted apart from the
-- time sums (a list-valued COUNT(DISTINCT) key over every row is slow).
phase_steps AS (
    SELECT run, phase, COUNT(*) AS steps
    FROM (SELECT DISTINCT run, phase, rank, step FROM g WHERE step IS NOT NULL)
    GROUP BY run, phase
),
phase_total AS (
    SELECT t.run, t.phase, t.phase_ns, t.first_ns, COALESCE(s.steps, 0) AS steps
    FROM (
        SELECT run, phase, SUM(dur_ns) AS phase_ns, MIN(start_ns) AS first_ns
        FROM g
        GROUP BY run, phase
    ) t
    LEFT JOIN phase_steps s USING (run, phase)
),
per_cat AS (
    SELECT run, phase, category, COUNT(*) AS activities, SUM(dur_ns) AS cat_ns
    FROM g
    GROUP BY run, phase, category
)
SELECT c.run, c.phase, c.category, c.activities,
       ROUND(c.cat_ns / 1e6, 3) AS gpu_ms,
       ROUND(100.0 * c.cat_ns / NULLIF(t.phase_ns, 0), 2) AS share_pct,
       ROUND(c.cat_ns / 1e6 / NULLIF(t.steps, 0), 4) AS gpu_ms_per_step
FROM per_cat c
JOIN phase_total t USING (run, phase)
ORDER BY c.run, t.first_ns, c.cat_ns DESC, c.category
