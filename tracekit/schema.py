"""The events table: the one place that declares its columns, types and meaning.

Users write SQL against these column names (see DESIGN.md), so a rename or removal
is a schema version bump.  Readers produce the *raw* columns; attribution and
classification fill in the *derived* ones.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

#: Kinds of event rows.
KINDS = ("kernel", "memcpy", "memset", "sync", "runtime", "range", "cpu_op")
#: Kinds that run on a GPU and are attributed through their launch.
GPU_KINDS = ("kernel", "memcpy", "memset")

# (name, type, meaning).  Order here is column order in the Parquet file.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("run", pa.string(), "run label (--run, else the first input file's stem)"),
    ("rank", pa.int32(), "process rank in the job"),
    ("pid", pa.int64(), "process id (GPU events carry the launching pid)"),
    ("tid", pa.int64(), "thread id; NULL for GPU events"),
    ("device", pa.int32(), "GPU index; NULL for CPU events"),
    ("stream", pa.int64(), "GPU stream / queue; NULL for CPU events"),
    ("kind", pa.string(), "kernel, memcpy, memset, sync, runtime, range, cpu_op"),
    ("name", pa.string(), "full name: demangled kernel, range text, API name"),
    ("short_name", pa.string(), "base kernel name without template arguments, else = name"),
    ("start_ns", pa.int64(), "start, integer ns on the run's clock"),
    ("end_ns", pa.int64(), "end, integer ns on the run's clock"),
    ("dur_ns", pa.int64(), "end_ns - start_ns"),
    ("correlation", pa.int64(), "links a GPU activity to the API call that launched it"),
    ("depth", pa.int32(), "nesting depth of a range on its thread (0 = outermost)"),
    ("category", pa.string(), "GPU activities: gemm, attention, communication, norm, elementwise, reduce, memory, other"),
    ("collective", pa.string(), "communication kernels: AllReduce, AllGather, ReduceScatter, ..."),
    ("phase", pa.string(), "phase of the step that launched the GPU activity"),
    ("step", pa.int32(), "per-rank index (from 0) of the step range that launched it"),
    ("op", pa.string(), "innermost operator range enclosing the launch"),
    ("path", pa.string(), "range stack at launch, outermost first, joined by '/'"),
    # Additions (allowed by DESIGN.md: more columns may be added).
    ("domain", pa.string(), "NVTX domain of a range (NULL = default domain)"),
    ("payload", pa.string(), "range payload: a number or a JSON object as text"),
    ("batch_size", pa.int64(), "batch size from the step range payload, on the step range and its GPU work"),
    ("tokens", pa.int64(), "tokens from the step range payload, on the step range and its GPU work"),
    ("layer", pa.int32(), "decoder layer index from a layer range in the path"),
    ("graph_id", pa.int64(), "CUDA graph id for kernels replayed from a graph"),
    ("graph_node_id", pa.int64(), "CUDA graph node id"),
    ("bytes", pa.int64(), "bytes moved (memcpy/memset; collectives where recorded)"),
    ("reduce_op", pa.string(), "communication kernels: Sum, Prod, Max, Min, Avg"),
    ("dtype", pa.string(), "communication kernels: element type (bf16, f16, f32 ...)"),
    ("algorithm", pa.string(), "communication kernels: RING, TREE, NVLS, COLLNET ..."),
    ("protocol", pa.string(), "communication kernels: LL, LL128, SIMPLE"),
    ("launch_tid", pa.int64(), "GPU activities: thread of the launching API call"),
    ("launch_ns", pa.int64(), "GPU activities: start of the launching API call"),
    (
        "busy_ns",
        pa.int64(),
        "GPU activities: the part of [start_ns, end_ns) not covered by earlier-starting "
        "activities of the same (rank, device, phase); SUM = busy time (union length)",
    ),
    (
        "step_busy_ns",
        pa.int64(),
        "GPU activities with a step: the same within (rank, device, phase, step); "
        "SUM = the step's busy time",
    ),
    (
        "exposed_ns",
        pa.int64(),
        "communication kernels: dur_ns minus the part of [start_ns, end_ns) covered by "
        "compute kernels (category not communication) of the same (rank, device)",
    ),
    (
        "launch_first",
        pa.bool_(),
        "GPU activities with a correlation: TRUE on one activity (the first by start_ns) "
        "of each launching call (pid, correlation), else FALSE; COUNT(*) FILTER (WHERE "
        "launch_first) = launching calls",
    ),
]

SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in COLUMNS])
COLUMN_DOC = {n: doc for n, _, doc in COLUMNS}

#: Columns a reader must provide (others may be absent and are filled with NULL).
RAW_REQUIRED = ("pid", "kind", "name", "start_ns", "end_ns")
#: Columns a reader may provide beyond the required ones.
RAW_OPTIONAL = (
    "rank", "tid", "device", "stream", "short_name", "correlation", "domain", "payload",
    "graph_id", "graph_node_id", "bytes", "nested",
)


def conform(table: pa.Table) -> pa.Table:
    """Return ``table`` with exactly the events schema: missing columns as NULL,
    types cast, extra columns dropped, column order fixed.

    >>> conform(pa.table({"kind": ["kernel"]})).num_columns == len(SCHEMA)
    True
    """
    n = table.num_rows
    cols = []
    for field in SCHEMA:
        if field.name in table.column_names:
            col = table.column(field.name)
            # Dictionary-encoded strings stay encoded in memory (paths, operators and
            # phases repeat); the Parquet file stores them as plain strings.
            is_dict_str = pa.types.is_dictionary(col.type) and pa.types.is_string(col.type.value_type)
            if col.type != field.type and not (is_dict_str and pa.types.is_string(field.type)):
                col = col.cast(field.type)
            cols.append(col)
        else:
            cols.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(cols, names=SCHEMA.names)
