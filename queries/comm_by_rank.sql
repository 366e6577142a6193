-- name: comm_by_rank
-- description: Communication per run, phase and rank: kernel time, transfer, waiting
--   for other ranks, exposed time and arrival skew, and how often the rank arrived last
--   at a collective (the rank the others wait for); see comm_by_phase for the matching.
-- column: run  run label
-- column: phase  phase of the launching step; '(no phase)' = unattributed
-- column: rank  process rank
-- column: kernels  communication kernels (count)
-- column: total_ms  kernel time (ms): sum of dur_ns
-- column: transfer_ms  transfer time (ms): per matched collective the shortest duration over ranks
-- column: wait_ms  waiting time (ms): duration - transfer, summed
-- column: exposed_ms  exposed time (ms): not overlapped by compute kernels on the same device
-- column: skew_ms  arrival skew (ms): start - earliest start of the collective, summed
-- column: last_arrivals  matched collectives this rank arrived last at (count)
-- column: unmatched_kernels  kernels without a counterpart on every rank
-- BEGIN shared comm CTEs (identical in every queries/comm_*.sql; tests check it)
-- One collective = the k-th communication kernel of the same collective on each rank
-- (the trace does not record the communicator): seq numbers a rank's kernels of one
-- collective by start time. A collective is matched when every rank that runs this
-- collective has a k-th kernel; then transfer = its shortest duration over ranks,
-- wait = duration - transfer, skew = start - earliest start. Exposed time is the part
-- of a communication kernel that no compute kernel on the same device overlaps.
WITH comm AS (
    SELECT run, rank, device, stream, phase, step, op, start_ns, end_ns, dur_ns, bytes, exposed_ns,
           COALESCE(collective, short_name, name) AS collective,
           row_number() OVER (
               PARTITION BY run, rank, COALESCE(collective, short_name, name)
               ORDER BY start_ns, end_ns, stream
           ) - 1 AS seq
    FROM events
    WHERE kind = 'kernel' AND category = 'communication'
),
coll_ranks AS (
    SELECT run, collective, COUNT(DISTINCT rank) AS ranks
    FROM comm
    GROUP BY run, collective
),
inst AS (
    SELECT c.run, c.collective, c.seq,
           COUNT(*) AS n_ranks,
           MIN(c.dur_ns) AS min_dur_ns,
           MIN(c.start_ns) AS first_start_ns,
           MAX(c.end_ns) - MIN(c.end_ns) AS end_spread_ns,
           arg_max(c.rank, c.start_ns) AS last_rank,
           MAX(c.bytes) AS inst_bytes,
           COUNT(*) = ANY_VALUE(r.ranks) AND ANY_VALUE(r.ranks) > 1 AS matched
    FROM comm c
    JOIN coll_ranks r USING (run, collective)
    GROUP BY c.run, c.collective, c.seq
),
-- Exposed time = duration - covered time; covered = length of the union of the compute
-- kernels of the same device inside the communication kernel: exposed_ns, computed at
-- ingest. Kernels without it (runs ingested before the column existed) get it here,
-- from the compute kernels that overlap them alone, found by equi-joins on 1 ms time
-- buckets (no range join, no sort of all kernels): a compute kernel of at most 1 ms
-- that overlaps a communication kernel starts in a bucket from one before the
-- communication kernel's first to its last; a longer one shares a bucket with it and is
-- paired in the first bucket both touch.
comm_near AS (
    SELECT run, rank, device, collective, seq, start_ns AS c_start, end_ns AS c_end,
           unnest(range((start_ns - 1000000) // 1000000, end_ns // 1000000 + 1)) AS bucket
    FROM comm
    WHERE device IS NOT NULL AND exposed_ns IS NULL
),
comm_in AS (
    SELECT run, rank, device, collective, seq, start_ns AS c_start, end_ns AS c_end,
           unnest(range(start_ns // 1000000, end_ns // 1000000 + 1)) AS bucket
    FROM comm
    WHERE device IS NOT NULL AND exposed_ns IS NULL
),
-- The compute kernels, read only if some communication kernel lacks exposed_ns: on a
-- new run the EXISTS is false and DuckDB stops this scan after its first vectors.
compute AS (
    SELECT run, rank, device, start_ns, end_ns
    FROM events
    WHERE kind = 'kernel' AND category IS DISTINCT FROM 'communication' AND device IS NOT NULL
      AND EXISTS (SELECT 1 FROM comm WHERE exposed_ns IS NULL)
),
-- Each overlapping (communication, compute) pair once, clipped to the communication kernel.
overlap AS (
    SELECT s.run, s.rank, s.collective, s.seq,
           GREATEST(k.start_ns, s.c_start) AS o_start, LEAST(k.end_ns, s.c_end) AS o_end
    FROM (
        SELECT run, rank, device, start_ns, end_ns, start_ns // 1000000 AS bucket
        FROM compute
        WHERE end_ns - start_ns <= 1000000
    ) k
    JOIN comm_near s USING (run, rank, device, bucket)
    WHERE k.start_ns < s.c_end AND k.end_ns > s.c_start
    UNION ALL
    SELECT s.run, s.rank, s.collective, s.seq,
           GREATEST(k.start_ns, s.c_start), LEAST(k.end_ns, s.c_end)
    FROM (
        SELECT run, rank, device, start_ns, end_ns,
               unnest(range(start_ns // 1000000, end_ns // 1000000 + 1)) AS bucket
        FROM compute
        WHERE end_ns - start_ns > 1000000
    ) k
    JOIN comm_in s USING (run, rank, device, bucket)
    WHERE k.start_ns < s.c_end AND k.end_ns > s.c_start
      AND k.bucket = GREATEST(k.start_ns // 1000000, s.c_start // 1000000)
),
-- Union length: in start order each piece adds its part past the latest earlier end.
overlap_reach AS (
    SELECT run, rank, collective, seq, o_start, o_end,
           MAX(o_end) OVER (
               PARTITION BY run, rank, collective, seq ORDER BY o_start
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
           ) AS reach
    FROM overlap
),
covered AS (
    SELECT run, rank, collective, seq,
           SUM(GREATEST(o_end - GREATEST(o_start, COALESCE(reach, o_start)), 0)) AS covered_ns
    FROM overlap_reach
    GROUP BY run, rank, collective, seq
),
comm_rows AS (
    SELECT c.run, c.rank, c.device, c.stream, c.phase, c.step, c.op, c.collective, c.seq,
           c.start_ns, c.dur_ns, i.n_ranks, i.matched, i.last_rank, i.end_spread_ns,
           i.inst_bytes,
           CASE WHEN i.matched THEN i.min_dur_ns END AS transfer_ns,
           CASE WHEN i.matched THEN c.dur_ns - i.min_dur_ns END AS wait_ns,
           CASE WHEN i.matched THEN c.start_ns - i.first_start_ns END AS skew_ns,
           COALESCE(c.exposed_ns, c.dur_ns - COALESCE(v.covered_ns, 0)) AS exposed_ns,
           -- bus bandwidth factor (nccl-tests PERFORMANCE.md): bytes * factor / time
           CASE c.collective
               WHEN 'AllReduce' THEN 2.0 * (i.n_ranks - 1) / i.n_ranks
               WHEN 'AllGather' THEN (i.n_ranks - 1) / i.n_ranks::DOUBLE
               WHEN 'ReduceScatter' THEN (i.n_ranks - 1) / i.n_ranks::DOUBLE
               WHEN 'AllToAll' THEN (i.n_ranks - 1) / i.n_ranks::DOUBLE
               ELSE 1.0
           END AS bus_factor
    FROM comm c
    JOIN inst i USING (run, collective, seq)
    LEFT JOIN covered v USING (run, rank, collective, seq)
)
-- END shared comm CTEs
SELECT run, COALESCE(phase, '(no phase)') AS phase, rank,
       COUNT(*) AS kernels,
       ROUND(SUM(dur_ns) / 1e6, 3) AS total_ms,
       ROUND(SUM(transfer_ns) / 1e6, 3) AS transfer_ms,
       ROUND(SUM(wait_ns) / 1e6, 3) AS wait_ms,
       ROUND(SUM(exposed_ns) / 1e6, 3) AS exposed_ms,
       ROUND(SUM(skew_ns) / 1e6, 3) AS skew_ms,
       COUNT(*) FILTER (WHERE matched AND last_rank = rank) AS last_arrivals,
       COUNT(*) FILTER (WHERE NOT matched) AS unmatched_kernels
FROM comm_rows
GROUP BY run, COALESCE(phase, '(no phase)'), rank
ORDER BY run, MIN(start_ns), phase, rank
