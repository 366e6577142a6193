-- name: op_share
-- description: Operator share of kernel time per run and phase, over all ranks: each
--   operator's kernel time, its share of the phase's kernel time (shares sum to 100%
--   per phase) and its kernel time per step. Kernels launched outside any operator
--   range are op = '(no op)'; kernels without a phase are phase = '(no phase)'.
-- column: run  run label
-- column: phase  phase of the launching step; '(no phase)' = unattributed
-- column: op  innermost operator range enclosing the launch; '(no op)' = none
-- column: kernels  kernels launched by the operator (count, all ranks)
-- column: kernel_ms  kernel time (ms): sum of dur_ns of the operator's kernels, all ranks
-- column: share_pct  kernel_ms as a share of the phase's kernel time (%)
-- column: kernel_ms_per_step  kernel time per step (ms): kernel_ms / step instances of the phase summed over ranks; NULL without steps
WITH k AS (
    SELECT run, rank, COALESCE(phase, '(no phase)') AS phase, step,
           COALESCE(op, '(no op)') AS op, dur_ns, start_ns
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
per_op AS (
    SELECT run, phase, op, COUNT(*) AS kernels, SUM(dur_ns) AS op_ns
    FROM k
    GROUP BY run, phase, op
)
SELECT o.run, o.phase, o.op, o.kernels,
       ROUND(o.op_ns / 1e6, 3) AS kernel_ms,
       ROUND(100.0 * o.op_ns / NULLIF(t.phase_ns, 0), 2) AS share_pct,
       ROUND(o.op_ns / 1e6 / NULLIF(t.steps, 0), 4) AS kernel_ms_per_step
FROM per_op o
JOIN phase_total t USING (run, phase)
ORDER BY o.run, t.first_ns, o.op_ns DESC, o.op
