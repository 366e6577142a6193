"""Kernel classification: short name, category and NCCL/RCCL fields from a kernel name.

Works on the *distinct* kernel names of a table (a few thousand at most), then maps
the answers back to every row with Arrow (``pc.index_in`` + ``take``), so the cost does
not grow with the number of events.

Rules (the contract users see in the ``short_name``, ``category``, ``collective``,
``reduce_op``, ``dtype``, ``algorithm`` and ``protocol`` columns):

``short_name``
    The unqualified base identifier of the kernel, the same rule Nsight Systems uses
    for its ``shortName``: return type, namespaces, template arguments and the
    parameter list are dropped (``void at::native::vectorized_elementwise_kernel<4,
    ...>(int, ...)`` -> ``vectorized_elementwise_kernel``). Itanium-mangled names
    (``_ZN5aiter24add_rmsnorm_quant_kernelI...``) give the last component of their
    nested name (``add_rmsnorm_quant_kernel``). Names without any of that (Triton,
    cuBLAS ``nvjet_*``, ``Cijk_*``) are their own short name. Rows that are not
    kernels keep ``short_name = name``. A short name the reader already gives wins.

``category`` (GPU activities only; NULL for CPU rows)
    memcpy/memset rows are ``memory``. Kernels: the first matching rule of
    ``communication``, ``attention``, ``norm``, ``gemm``, ``reduce``, ``elementwise``,
    else ``other``. Rules look at the qualified name without template arguments and
    parameters (so a ``ReduceAdd`` functor in the template arguments does not make an
    index kernel a reduction), plus the whole name for wrapper kernels whose real
    identity lives in the first template argument (``cutlass::Kernel<...gemm...>``,
    ``cutlass::device_kernel<flash::...>``, CK's ``kentry<...>``, rocPRIM's
    ``trampoline_kernel<...>``) and for mangled names. Decisions worth knowing:

    - KV-cache writes (vLLM ``reshape_and_cache*``, SGLang ``store_kvcache``) are
      ``elementwise`` (copies), not ``attention``.
    - Convolutions (cuDNN implicit GEMM, ``scudnn``, fprop/dgrad/wgrad) and cuBLAS
      helpers (split-K reduction, gemv, dot) are ``gemm``.
    - Stand-alone softmax, top-k, argmax, scans and pooling are ``reduce``; softmax
      inside a fused attention kernel is part of ``attention``.
    - Fused all-reduce + norm kernels (TensorRT-LLM/FlashInfer ``allreduce_fusion``)
      are ``communication``.
    - Torch Inductor: ``triton_poi_*`` is ``elementwise``, ``triton_red_*`` /
      ``triton_per_*`` are ``reduce`` (``norm`` when they compute an ``rsqrt``, the
      signature of an RMS/layer norm), ``triton_tem_*`` are ``gemm``.

``collective``, ``reduce_op``, ``dtype``, ``algorithm``, ``protocol``
    Parsed from the names of every NCCL generation (``ncclAllReduceRingLLKernel_sum_f32``
    before 2.7, ``ncclKernel_AllReduce_RING_LL_Sum_float`` up to 2.18,
    ``ncclDevKernel_AllReduce_Sum_bf16_RING_LL`` from 2.19, ``ncclSymkDevKernel_*``
    from 2.27), RCCL (the same names, ``rcclGenericKernel``, ``mscclKernel_*``) and
    the custom all-reduce kernels of serving frameworks (vLLM/aiter/SGLang
    ``cross_device_reduce_*``, TensorRT-LLM/FlashInfer ``allreduce_fusion_*``,
    ``oneShotAllReduceKernel``, torch symmetric memory ``multimem_all_reduce``).
    ``ncclDevKernel_Generic*`` and ``rcclGenericKernel`` run whatever collective the
    host queued, so their ``collective`` is NULL (unknown from the name), as are the
    fields a name does not carry. ``reduce_op`` and ``dtype`` are NULL for collectives
    that do not reduce (AllGather, Broadcast, SendRecv, AllToAll): NCCL moves those as
    bytes and the ``Sum_int8_t`` in their old names is a placeholder, not the
    tensor's type. dtype spellings are normalised to bf16, f16, f32, f64, i8, u8,
    i32, u32, i64, u64, f8e4m3, f8e5m2.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.errors import TracekitError

CATEGORIES = (
    "gemm",
    "attention",
    "communication",
    "norm",
    "elementwise",
    "reduce",
    "memory",
    "other",
)
COLLECTIVES = (
    "AllReduce",
    "AllGather",
    "ReduceScatter",
    "Broadcast",
    "Reduce",
    "SendRecv",
    "Send",
    "Recv",
    "AllToAll",
)
#: Output columns of :func:`classify`, in order.
OUTPUT_COLUMNS = (
    "short_name",
    "category",
    "collective",
    "reduce_op",
    "dtype",
    "algorithm",
    "protocol",
)

_MEMORY_KINDS = ("memcpy", "memset")


class KernelInfo(NamedTuple):
    """What a kernel name says about the kernel (see the module docstring)."""

    short_name: str
    category: str
    collective: str | None = None
    reduce_op: str | None = None
    dtype: str | None = None
    algorithm: str | None = None
    protocol: str | None = None


# ---------------------------------------------------------------------------------
# Names

_ANON = re.compile(r"\(anonymous namespace\)|<unnamed>|\{anonymous\}|`anonymous namespace'")
_OPEN = "<([{"
_CLOSE = {">": "<", ")": "(", "]": "[", "}": "{"}
_QUALIFIERS = {"const", "volatile", "&", "&&", "*", "__restrict__"}


def _top_level(name: str) -> str:
    """The text of ``name`` outside every bracket pair.

    A ``>`` closes only a ``<`` (so comparisons inside ``enable_if<((8)>(0))>`` do not
    unbalance the scan).
    """
    out: list[str] = []
    stack: list[str] = []
    for ch in name:
        if ch in _OPEN:
            stack.append(ch)
        elif ch in _CLOSE:
            if stack and stack[-1] == _CLOSE[ch]:
                stack.pop()
            elif ch != ">":
                stack.clear()  # unbalanced: give up nesting rather than eat the rest
        elif not stack:
            out.append(ch)
    return "".join(out)


_MANGLED_PART = re.compile(r"(\d+)")


def _demangle_nested(name: str) -> list[str]:
    """Components of the (nested) name at the head of an Itanium-mangled symbol."""
    i = 2
    if name.startswith("_ZN"):
        i = 3
        while i < len(name) and name[i] in "rVKRO":  # cv/ref qualifiers of member functions
            i += 1
    parts: list[str] = []
    while i < len(name):
        if name.startswith("St", i):  # ::std:: abbreviation
            parts.append("std")
            i += 2
            continue
        if name.startswith("S", i):  # substitution (S_, S0_ ...): refers back, skip it
            j = name.find("_", i)
            if j < 0:
                break
            i = j + 1
            continue
        m = _MANGLED_PART.match(name, i)
        if not m:
            break
        n = int(m.group(1))
        start = m.end()
        parts.append(name[start : start + n])
        i = start + n
    return parts


def qualified_name(name: str) -> str:
    """The kernel's qualified name without return type, template arguments or parameters.

    >>> qualified_name("void at::native::reduce_kernel<512, 1>(at::native::ReduceOp<float>)")
    'at::native::reduce_kernel'
    >>> qualified_name("_ZN5aiter24add_rmsnorm_quant_kernelIDF16bEEvPT_")
    'aiter::add_rmsnorm_quant_kernel'
    """
    s = name.strip()
    if s.startswith("_Z"):
        parts = _demangle_nested(s)
        return "::".join(parts) if parts else s
    s = _ANON.sub("anonymous", s)
    tokens = [t for t in _top_level(s).split() if t not in _QUALIFIERS]
    if not tokens:
        return s
    return tokens[-1].strip("*&")


def short_name(name: str) -> str:
    """The base kernel name (the rule Nsight Systems uses for ``shortName``).

    >>> short_name("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)")
    'vectorized_elementwise_kernel'
    >>> short_name("ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)")
    'ncclDevKernel_SendRecv'
    """
    q = qualified_name(name)
    base = q.rsplit("::", 1)[-1]
    return base or name


# ---------------------------------------------------------------------------------
# Communication

_DTYPES: dict[str, str] = {}
for _canon, _spellings in {
    "i8": ("i8", "int8", "int8_t", "char", "signed char"),
    "u8": ("u8", "uint8", "uint8_t", "unsigned char"),
    "i32": ("i32", "int32", "int32_t", "int"),
    "u32": ("u32", "uint32", "uint32_t", "unsigned int", "unsigned"),
    "i64": ("i64", "int64", "int64_t", "long", "long long"),
    "u64": ("u64", "uint64", "uint64_t", "unsigned long", "unsigned long long"),
    "f16": ("f16", "fp16", "half", "__half", "float16", "c10::half", "cutlass::half_t", "_float16"),
    "f32": ("f32", "fp32", "float", "float32"),
    "f64": ("f64", "fp64", "double", "float64"),
    "bf16": (
        "bf16",
        "bfloat16",
        "__nv_bfloat16",
        "nv_bfloat16",
        "__hip_bfloat16",
        "hip_bfloat16",
        "c10::bfloat16",
        "cutlass::bfloat16_t",
        "bfloat16_t",
    ),
    "f8e4m3": (
        "f8e4m3",
        "fp8e4m3",
        "fp8_e4m3",
        "__nv_fp8_e4m3",
        "c10::float8_e4m3fn",
        "float8_e4m3fn",
        "c10::float8_e4m3fnuz",
        "e4m3",
    ),
    "f8e5m2": (
        "f8e5m2",
        "fp8e5m2",
        "fp8_e5m2",
        "__nv_fp8_e5m2",
        "c10::float8_e5m2",
        "float8_e5m2",
        "e5m2",
    ),
}.items():
    for _s in _spellings:
        _DTYPES[_s] = _canon


def normalise_dtype(text: str | None) -> str | None:
    """Canonical dtype for a C++/NCCL/torch spelling, or None when unknown.

    >>> normalise_dtype("__nv_bfloat16"), normalise_dtype("int8_t"), normalise_dtype("Foo")
    ('bf16', 'i8', None)
    """
    if text is None:
        return None
    return _DTYPES.get(" ".join(text.strip().lower().split()))


_COLL_CANON = {
    "allreduce": "AllReduce",
    "allgather": "AllGather",
    "reducescatter": "ReduceScatter",
    "broadcast": "Broadcast",
    "reduce": "Reduce",
    "sendrecv": "SendRecv",
    "send": "Send",
    "recv": "Recv",
    "alltoall": "AllToAll",
    "alltoallpivot": "AllToAll",
    "alltoallv": "AllToAll",
}
_REDUCING = {"AllReduce", "ReduceScatter", "Reduce"}
_OP_CANON = {
    "sum": "Sum",
    "prod": "Prod",
    "min": "Min",
    "max": "Max",
    "minmax": "MinMax",
    "premulsum": "PreMulSum",
    "sumpostdiv": "SumPostDiv",
    "avg": "Avg",
}
_ALGOS = "RING|TREE|COLLNET_DIRECT|COLLNET_CHAIN|COLLNET|NVLS_TREE|NVLS|PAT"
_PROTOS = "LL128|LL|SIMPLE"
_OPS = "Sum|Prod|MinMax|Min|Max|PreMulSum|SumPostDiv|Avg"
_NCCL_TYPES = "i8|u8|i32|u32|i64|u64|f16|f32|f64|bf16|f8e4m3|f8e5m2"

# NCCL <= 2.18: ncclKernel_<Coll>_<ALGO>_<PROTO>_<Op>_<type>
_NCCL_OLD = re.compile(
    rf"^ncclKernel_(?P<coll>[A-Za-z]+)_(?P<algo>{_ALGOS})_(?P<proto>{_PROTOS})"
    rf"_(?P<op>{_OPS})_(?P<ty>\w+)$"
)
# NCCL >= 2.19: ncclDevKernel_<Coll>[_<Op>_<type>][_<ALGO>_<PROTO>]
_NCCL_DEV = re.compile(
    rf"^ncclDevKernel_(?P<coll>[A-Za-z]+)(?:_(?P<op>{_OPS})_(?P<ty>{_NCCL_TYPES}))?"
    rf"(?:_(?P<algo>{_ALGOS})_(?P<proto>{_PROTOS}))?$"
)
_NCCL_GENERIC = re.compile(
    r"^(?:ncclDevKernel_Generic(?:_\d+)?|rcclGenericKernel|ncclKernel_Generic)$"
)
# NCCL < 2.7: ncclAllReduceRingLLKernel_sum_f32
_NCCL_ANCIENT = re.compile(
    r"^nccl(?P<coll>AllReduce|AllGather|ReduceScatter|Broadcast|Reduce|SendRecv|Send|Recv)"
    r"(?P<algo>Ring|Tree|CollNetDirect|CollNetChain|CollNet)?(?P<proto>LL128|LL)?"
    r"Kernel_(?P<op>sum|prod|min|max|premulsum|sumpostdiv)_(?P<ty>\w+)$"
)
# NCCL >= 2.27 symmetric-memory kernels: ncclSymkDevKernel_<Coll>_<variant>[_<op>_<type>]
_NCCL_SYMK = re.compile(
    r"^ncclSymkDevKernel_(?P<coll>AllReduce|AllGather|ReduceScatter|Broadcast|AllToAll)"
    r"(?:_(?P<variant>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?))?"
    rf"(?:_(?P<op>sum|prod|minmax|min|max|premulsum|sumpostdiv|avg)_(?P<ty>{_NCCL_TYPES}))?$"
)
# MSCCL (RCCL): mscclKernel_<Op>_<type>_<Proto>[_<fullOps>]
_MSCCL = re.compile(
    rf"^mscclKernel_(?P<op>{_OPS})_(?P<ty>\w+?)_(?P<proto>LL128|LL|Simple)(?:_(?:true|false))?$"
)
_CCL_PREFIX = re.compile(r"^(?:nccl|rccl|msccl)", re.IGNORECASE)
# Custom collectives of serving frameworks; matched on the qualified name, case kept so
# that camel-case word starts ("oneShotAllReduce") count and "smallGather" does not.
_CUSTOM = [
    (
        "AllReduce",
        re.compile(r"cross_device_reduce|(?:(?<![A-Za-z])[Aa]ll|All)_?[Rr]educe(?!_?[Ss]catter)"),
    ),
    ("ReduceScatter", re.compile(r"(?:(?<![A-Za-z])[Rr]educe|Reduce)_?[Ss]catter")),
    ("AllGather", re.compile(r"(?:(?<![A-Za-z])[Aa]ll|All)_?[Gg]ather")),
    ("AllToAll", re.compile(r"(?:(?<![A-Za-z])[Aa]ll|All)_?[Tt]o_?[Aa]ll|deep_ep::")),
]
_OTHER_COMM = re.compile(r"userbuffers|deep_ep::|nvshmem", re.IGNORECASE)


def _template_args(name: str, base: str) -> list[str]:
    """Top-level template arguments of ``base<...>`` in ``name`` (empty if none)."""
    at = name.find(base + "<")
    if at < 0:
        return []
    args: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in name[at + len(base) + 1 :]:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    args.append("".join(cur))
    return [a.strip() for a in args]


def _nccl_fields(
    coll: str | None, op: str | None, ty: str | None, algo: str | None, proto: str | None
) -> tuple[str | None, ...]:
    c = _COLL_CANON.get(coll.lower()) if coll else None
    if c is None and coll and coll.lower() != "generic":
        c = coll  # a collective this table does not know yet: keep NCCL's spelling
    reducing = c in _REDUCING or c is None
    o = _OP_CANON.get(op.lower()) if (op and reducing) else None
    d = normalise_dtype(ty) if (ty and reducing) else None
    a = algo.upper() if algo else None
    if a in ("COLLNETDIRECT", "COLLNETCHAIN"):
        a = "COLLNET_" + a[7:]
    p = proto.upper() if proto else None
    return c, o, d, a, p


def parse_communication(name: str) -> tuple[str | None, ...] | None:
    """(collective, reduce_op, dtype, algorithm, protocol) of a communication kernel,
    or None when ``name`` is not one.

    >>> parse_communication("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)")
    ('AllReduce', 'Sum', 'bf16', 'RING', 'LL')
    >>> parse_communication("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclWorkElem)")
    ('SendRecv', None, None, 'RING', 'SIMPLE')
    """
    q = qualified_name(name)
    base = q.rsplit("::", 1)[-1]
    if _NCCL_GENERIC.match(base):
        return (None, None, None, None, None)
    for rx in (_NCCL_OLD, _NCCL_DEV):
        m = rx.match(base)
        if m:
            return _nccl_fields(m["coll"], m["op"], m["ty"], m["algo"], m["proto"])
    m = _NCCL_ANCIENT.match(base)
    if m:
        proto = m["proto"] or "SIMPLE"
        return _nccl_fields(m["coll"], m["op"], m["ty"], m["algo"], proto)
    m = _NCCL_SYMK.match(base)
    if m:
        return _nccl_fields(m["coll"], m["op"], m["ty"], None, None)
    m = _MSCCL.match(base)
    if m:
        _, o, d, _, p = _nccl_fields(None, m["op"], m["ty"], None, m["proto"])
        return (None, o, d, "MSCCL", p)
    if _CCL_PREFIX.match(base):
        return (None, None, None, None, None)  # an NCCL/RCCL kernel of a shape not known yet
    for coll, rx in _CUSTOM:
        if rx.search(q):
            dtype = next(filter(None, map(normalise_dtype, _template_args(name, base))), None)
            op = "Sum" if coll in _REDUCING else None
            return (
                coll,
                op,
                dtype if coll in _REDUCING or coll == "AllGather" else None,
                None,
                None,
            )
    if _OTHER_COMM.search(q):
        return (None, None, None, None, None)
    return None


# ---------------------------------------------------------------------------------
# Categories

_WRAPPERS = {"Kernel", "Kernel2", "device_kernel", "kentry", "trampoline_kernel", "kernel"}
_RULES: list[tuple[str, re.Pattern[str]]] = [
    # KV-cache writes are copies, even when their names mention flash/paged attention.
    (
        "elementwise",
        re.compile(r"reshape_and_cache|store_kvcache|concat_and_cache|copy_blocks|swap_blocks"),
    ),
    (
        "attention",
        re.compile(
            r"flash_fwd|flash_bwd|flash::|flashattn|flash_attn|flashmla|fmha|attention|attn|sdpa"
            r"|(?<![a-z])mha(?![a-z])|(?<![a-z])mla(?![a-z])|withpagedkvcache|withkvcache"
            r"|withraggedkvcache|xformers|paged_?kv_?decode"
        ),
    ),
    (
        "norm",
        re.compile(
            r"rms_?norm|layer_?norm|group_?norm|batch_?norm|instance_?norm|bn_fw|bn_bw|l2_?norm"
            r"|qk_?norm|rowwisemoments|gammabeta|triton_(?:red|per)_fused\w*rsqrt"
        ),
    ),
    (
        "gemm",
        re.compile(
            r"(?<!fb)gemm|gemv|matmul|cublas|nvjet|^cijk_|cutlass|xmma|scudnn|wgmma|(?<![a-z])bmm_|_bmm"
            r"|dot_kernel|splitkreduce|triton_tem_|fused_moe_kernel|flatmm|wvsplitk|implicit_?conv"
            r"|convolution|convolve|winograd|fprop_|dgrad_|wgrad_"
        ),
    ),
    (
        "reduce",
        re.compile(
            r"reduce|reduction|softmax|argmax|argmin|topk|top_k|scan|cumsum|cumprod|(?<![a-z])sum"
            r"|_sum|max_?pool|avg_?pool|adaptive_\w*pool|logsumexp|welford|nllcriterion|nll_loss"
            r"|cross_entropy|triton_red_|triton_per_|nvfuser_reduction|nvfuser_\w*persistent"
        ),
    ),
    (
        "elementwise",
        re.compile(
            r"elementwise|vectorized|unrolled|copy|fill|memset|index|gather|scatter|catarray|concat"
            r"|silu|gelu|relu|swiglu|act_and_mul|activation|rotary|(?<![a-z])rope|quant|multi_tensor_apply"
            r"|nchwtonhwc|nhwctonchw|transpose|permute|triton_poi_|masked_|clamp|dropout|pointwise"
            r"|im2col|col2im|scalepackedtensor|axpy|_to_float|dequant"
        ),
    ),
]


def _category(name: str, q: str, comm: bool) -> str:
    if comm:
        return "communication"
    base = q.rsplit("::", 1)[-1]
    subject = q.lower()
    if name.startswith("_Z") or base in _WRAPPERS:
        subject = subject + " " + name.lower()
    # cuBLAS internals (gemv reductions, split-K) carry cuBLAS types in their arguments.
    if "cublas" in name.lower():
        return "gemm"
    for cat, rx in _RULES:
        if rx.search(subject):
            return cat
    return "other"


@functools.lru_cache(maxsize=1 << 16)
def classify_name(name: str) -> KernelInfo:
    """Classify one kernel name (cached: call it on distinct names).

    >>> classify_name("ncclKernel_AllReduce_RING_LL_Sum_float(ncclWorkElem)")
    KernelInfo(short_name='ncclKernel_AllReduce_RING_LL_Sum_float', category='communication', collective='AllReduce', reduce_op='Sum', dtype='f32', algorithm='RING', protocol='LL')
    """
    q = qualified_name(name)
    base = q.rsplit("::", 1)[-1] or name
    comm = parse_communication(name)
    cat = _category(name, q, comm is not None)
    if comm is None:
        return KernelInfo(base, cat)
    return KernelInfo(base, cat, *comm)


# ---------------------------------------------------------------------------------
# Vectorised entry point


def _as_array(col: pa.Array | pa.ChunkedArray, what: str) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise TracekitError(f"classify needs {what} as strings, got Arrow type {col.type}.")
    return col.cast(pa.string())


def classify(
    names: pa.Array | pa.ChunkedArray,
    kinds: pa.Array | pa.ChunkedArray | str = "kernel",
    short_names: pa.Array | pa.ChunkedArray | None = None,
) -> pa.Table:
    """Derived columns for event rows: one output row per input row.

    ``names`` are the events' ``name`` column, ``kinds`` their ``kind`` column (or one
    kind for all rows), ``short_names`` an optional reader-provided short name that
    wins where it is not NULL. Returns a table with :data:`OUTPUT_COLUMNS`.

    >>> t = classify(pa.array(["ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)",
    ...                        "[CUDA memcpy HtoD]", "forward"]),
    ...              pa.array(["kernel", "memcpy", "range"]))
    >>> t.column("category").to_pylist(), t.column("collective").to_pylist()
    (['communication', 'memory', None], ['SendRecv', None, None])
    """
    names = _as_array(names, "kernel names")
    n = len(names)
    if isinstance(kinds, str):
        kinds = pa.array([kinds] * n, pa.string())
    kinds = _as_array(kinds, "event kinds")
    if len(kinds) != n:
        raise TracekitError(
            f"classify got {n} names but {len(kinds)} kinds; they must be the same length."
        )

    is_kernel = pc.fill_null(pc.equal(kinds, "kernel"), False)
    is_memory = pc.fill_null(pc.is_in(kinds, value_set=pa.array(_MEMORY_KINDS)), False)

    distinct = pc.unique(pc.drop_null(pc.filter(names, is_kernel)))
    infos = [classify_name(s) for s in distinct.to_pylist()]
    per_name = {
        col: pa.array([info[i] for info in infos], pa.string())
        for i, col in enumerate(OUTPUT_COLUMNS)
    }
    idx = pc.index_in(names, value_set=distinct)
    null = pa.nulls(n, pa.string())

    out: dict[str, pa.Array] = {}
    for col in OUTPUT_COLUMNS:
        mapped = per_name[col].take(idx) if len(distinct) else null
        out[col] = pc.if_else(is_kernel, mapped, null)
    out["short_name"] = pc.if_else(is_kernel, out["short_name"], names)
    out["category"] = pc.if_else(is_memory, pa.scalar("memory"), out["category"])
    if short_names is not None:
        given = _as_array(short_names, "short names")
        out["short_name"] = pc.coalesce(given, out["short_name"])
    return pa.table(out)
