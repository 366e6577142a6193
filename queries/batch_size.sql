-- name: batch_size
-- description: Mean against maximum batch size per run and phase, over all ranks'
--   steps: how full the batches were. Batch size and tokens come from the step
--   range's payload (on the step range and its GPU work); steps without one are left
--   out of the means.
-- column: run  run label
-- column: phase  phase of the steps
-- column: steps  step instances (count over ranks)
-- column: steps_with_batch  steps whose payload carries a batch size (count)
-- column: batch_size_mean  mean batch size per step
-- column: batch_size_max  largest batch size
-- column: batch_size_min  smallest batch size
-- column: batch_fill_pct  batch_size_mean as a share of batch_size_max (%)
-- column: tokens_mean  mean tokens per step
-- column: tokens_max  most tokens in one step
WITH per_step AS (
    SELECT run, rank, phase, step, MIN(start_ns) AS first_ns,
           MAX(batch_size) AS batch_size, MAX(tokens) AS tokens
    FROM events
    WHERE phase IS NOT NULL AND step IS NOT NULL
    GROUP BY run, rank, phase, step
)
SELECT run, phase, COUNT(*) AS steps,
       COUNT(batch_size) AS steps_with_batch,
       ROUND(AVG(batch_size), 2) AS batch_size_mean,
       MAX(batch_size) AS batch_size_max,
       MIN(batch_size) AS batch_size_min,
       ROUND(100.0 * AVG(batch_size) / NULLIF(MAX(batch_size), 0), 2) AS batch_fill_pct,
       ROUND(AVG(tokens), 2) AS tokens_mean,
       MAX(tokens) AS tokens_max
FROM per_step
GROUP BY run, phase
ORDER BY run, MIN(first_ns)
