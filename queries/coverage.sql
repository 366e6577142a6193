-- name: coverage
-- description: Attribution coverage per run and rank: the share of GPU time (kernels,
--   memcpy and memset) whose launch was attributed to a phase, a step, an operator,
--   and to any range at all. Low coverage means the phase map or the instrumentation
--   misses part of the work.
-- column: run  run label
-- column: rank  process rank
-- column: activities  kernels, memcpy and memset (count)
-- column: gpu_ms  GPU time (ms): sum of dur_ns of kernels, memcpy and memset
-- column: with_phase_pct  share of gpu_ms with a phase (%)
-- column: with_step_pct  share of gpu_ms with a step (%)
-- column: with_op_pct  share of gpu_ms with an operator (%)
-- column: with_range_pct  share of gpu_ms launched inside any range (non-empty path) (%)
SELECT run, rank, COUNT(*) AS activities,
       ROUND(SUM(dur_ns) / 1e6, 3) AS gpu_ms,
       ROUND(100.0 * COALESCE(SUM(dur_ns) FILTER (WHERE phase IS NOT NULL), 0) / NULLIF(SUM(dur_ns), 0), 2) AS with_phase_pct,
       ROUND(100.0 * COALESCE(SUM(dur_ns) FILTER (WHERE step IS NOT NULL), 0) / NULLIF(SUM(dur_ns), 0), 2) AS with_step_pct,
       ROUND(100.0 * COALESCE(SUM(dur_ns) FILTER (WHERE op IS NOT NULL), 0) / NULLIF(SUM(dur_ns), 0), 2) AS with_op_pct,
       ROUND(100.0 * COALESCE(SUM(dur_ns) FILTER (WHERE COALESCE(path, '') <> ''), 0) / NULLIF(SUM(dur_ns), 0), 2) AS with_range_pct
FROM events
WHERE kind IN ('kernel', 'memcpy', 'memset')
GROUP BY run, rank
ORDER BY run, rank
