-- name: top_kernels
-- description: The kernels with the most kernel time per run and phase, over all
--   ranks, grouped by base kernel name (short_name).
-- param: top_n INTEGER 10 kernels listed per run and phase
-- column: run  run label
-- column: phase  phase of the launching step; '(no phase)' = unattributed
-- column: rank_in_phase  position by kernel time within the phase (1 = most)
-- column: kernel  base kernel name (short_name)
-- column: category  category of the kernel (the most frequent one where a name has several)
-- column: calls  kernel instances (count, all ranks)
-- column: kernel_ms  kernel time (ms): sum of dur_ns, all ranks
-- column: share_pct  kernel_ms as a share of the phase's kernel time (%)
-- column: mean_us  mean duration of one call (µs)
-- column: max_us  longest call (µs)
-- column: calls_per_step  calls / step instances of the phase summed over ranks; NULL without steps
WITH k AS (
    SELECT run, rank, COALESCE(phase, '(no phase)') AS phase, step,
           COALESCE(short_name, name) AS kernel, category, dur_ns, start_ns
    FROM events
    WHERE kind = 'kernel'
),
-- Step instances per phase: distinct (rank, step) pairs, counted apart from the
-- time sums (a list-valued COUNT(DISTINCT) key over every row is slow).
phase_steps AS (
    SELECT run, phase, COUNT(*) AS steps
    FROM (SELECT DISTINCT run, phase, rank, step FROM k WHERE step IS NOT NULL)
    GROUP BY run, phase
),
phase_total AS (
    SELECT t.run, t.phase, t.phase_ns, t.first_ns, COALESCE(s.steps, 0) AS steps
    FROM (
        SELECT run, phase, SUM(dur_ns) AS phase_ns, MIN(start_ns) AS first_ns
        FROM k
        GROUP BY run, phase
    ) t
    LEFT JOIN phase_steps s USING (run, phase)
),
per_kernel AS (
    SELECT run, phase, kernel, mode(category) AS category, COUNT(*) AS calls,
           SUM(dur_ns) AS kernel_ns, AVG(dur_ns) AS mean_ns, MAX(dur_ns) AS max_ns
    FROM k
    GROUP BY run, phase, kernel
),
ranked AS (
    SELECT p.*, t.phase_ns, t.first_ns, t.steps,
           ROW_NUMBER() OVER (PARTITION BY p.run, p.phase ORDER BY p.kernel_ns DESC, p.kernel) AS rank_in_phase
    FROM per_kernel p
    JOIN phase_total t USING (run, phase)
)
SELECT run, phase, rank_in_phase, kernel, category, calls,
       ROUND(kernel_ns / 1e6, 3) AS kernel_ms,
       ROUND(100.0 * kernel_ns / NULLIF(phase_ns, 0), 2) AS share_pct,
       ROUND(mean_ns / 1e3, 2) AS mean_us,
       ROUND(max_ns / 1e3, 2) AS max_us,
       ROUND(calls / NULLIF(steps, 0), 2) AS calls_per_step
FROM ranked
WHERE rank_in_phase <= COALESCE(getvariable('top_n'), 10)
ORDER BY run, first_ns, rank_in_phase
