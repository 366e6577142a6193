"""A Llama-style decoder inference loop, tensor-parallel, annotated with nvtx_ranges.

Plain PyTorch, random weights: RMSNorm, fused QKV projection with rotary embedding,
SDPA attention over a KV cache, SwiGLU FFN.  Tensor parallelism over the ranks of a
torchrun job (Megatron style): QKV and gate/up are split by columns, o and down by
rows, and one all_reduce follows the attention and one the FFN.  A batched prefill
is followed by greedy decode steps (optionally replayed from one CUDA graph).

Operator ranges use LightLLM's names (``_att_norm``, ``_get_qkv``,
``_post_cache_kv``, ``_context_attention_kernel`` in prefill,
``_token_attention_kernel`` in decode, ``_get_o``, ``_ffn_norm``, ``_ffn``,
``all_reduce``), plus ``layer.<i>``, ``phase:prefill`` / ``phase:decode`` and one
``step`` per forward (payload batch_size, tokens).

Per rank it writes ``facts_rank<r>.json`` (what the program did in the measured
window: ranges, steps and all_reduce calls per phase, CUDA-event phase times,
config, versions) and, with ``--profiler torch``, ``trace_rank<r>.pt.trace.json.gz``
(Kineto).  The measured window (after ``--warmup`` untraced generations) is also
bracketed by cudaProfilerStart/Stop for ``nsys --capture-range=cudaProfilerApi``.

    python examples/tp_decoder.py --layers 2 --hidden 256 --heads 4 --out /tmp/run
    torchrun --nproc-per-node 2 examples/tp_decoder.py --profiler torch --out /tmp/run
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
import nvtx_ranges as nr

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# --- what the program did, counted as it does it --------------------------------


class Facts:
    """Counts of emitted ranges and collectives per phase, in the measured window."""

    def __init__(self) -> None:
        self.on = False
        self.phase = "none"
        self.ranges: dict[str, Counter[str]] = defaultdict(Counter)
        self.all_reduce_calls: Counter[str] = Counter()
        self.graph_replays: Counter[str] = Counter()

    def r(self, rng: nr.Range) -> nr.Range:
        if self.on:
            self.ranges[self.phase][rng.name] += 1
        return rng


FACTS = Facts()


def op(name: str) -> nr.Range:
    return FACTS.r(nr.op(name))


def all_reduce(t: torch.Tensor) -> None:
    with op("all_reduce"):
        if FACTS.on:
            FACTS.all_reduce_calls[FACTS.phase] += 1
        dist.all_reduce(t)


# --- model -----------------------------------------------------------------------


class TPDecoder:
    def __init__(self, a: argparse.Namespace, rank: int, world: int, device: torch.device):
        if a.heads % world or a.ffn % world:
            raise SystemExit(
                f"--heads {a.heads} and --ffn {a.ffn} must divide by world size {world}"
            )
        self.a, self.rank, self.world, self.dev = a, rank, world, device
        self.dtype = DTYPES[a.dtype]
        self.hd = a.hidden // a.heads
        self.h_loc = a.heads // world
        self.ffn_loc = a.ffn // world
        self.max_len = a.prompt_len + a.gen_len
        g = torch.Generator().manual_seed(1234)  # replicated parts: same on all ranks
        kw: dict[str, Any] = {"device": device, "dtype": self.dtype}

        def rnd(*shape: int, gen: torch.Generator = g) -> torch.Tensor:
            t = torch.randn(*shape, generator=gen) / math.sqrt(shape[0])
            return t.to(**kw)

        self.embed = rnd(a.vocab, a.hidden) * math.sqrt(a.vocab)
        self.lm_head = rnd(a.hidden, a.vocab)
        self.final_norm = torch.ones(a.hidden, **kw)
        gs = torch.Generator().manual_seed(1000 + rank)  # this rank's shards
        self.layers = []
        for _ in range(a.layers):
            self.layers.append(
                {
                    "att_norm": torch.ones(a.hidden, **kw),
                    "ffn_norm": torch.ones(a.hidden, **kw),
                    "w_qkv": rnd(a.hidden, 3 * self.h_loc * self.hd, gen=gs),  # column-parallel
                    "w_o": rnd(self.h_loc * self.hd, a.hidden, gen=gs),  # row-parallel
                    "w_gate_up": rnd(a.hidden, 2 * self.ffn_loc, gen=gs),  # column-parallel
                    "w_down": rnd(self.ffn_loc, a.hidden, gen=gs),  # row-parallel
                }
            )
        shape = (a.batch, self.h_loc, self.max_len, self.hd)
        self.k_cache = [torch.zeros(shape, **kw) for _ in range(a.layers)]
        self.v_cache = [torch.zeros(shape, **kw) for _ in range(a.layers)]
        inv = 1.0 / (10000 ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
        ang = torch.outer(torch.arange(self.max_len, dtype=torch.float32), inv)
        ang = torch.cat([ang, ang], dim=-1)
        self.cos, self.sin = ang.cos().to(**kw), ang.sin().to(**kw)
        self.arange = torch.arange(self.max_len, device=device)
        # decode state, static so one CUDA graph can replay a whole decode step
        self.tokens = torch.zeros(a.batch, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)

    @staticmethod
    def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def layer(self, i: int, x: torch.Tensor, prefill: bool) -> torch.Tensor:
        w = self.layers[i]
        b, t, _ = x.shape
        with op("_att_norm"):
            h = self.rmsnorm(x, w["att_norm"])
        with op("_get_qkv"):
            qkv = (h @ w["w_qkv"]).view(b, t, 3, self.h_loc, self.hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            if prefill:
                cos, sin = self.cos[:t], self.sin[:t]
            else:
                cos, sin = self.cos.index_select(0, self.pos), self.sin.index_select(0, self.pos)
            q, k = self.rotate(q, cos, sin), self.rotate(k, cos, sin)
        with op("_post_cache_kv"):
            if prefill:
                self.k_cache[i][:, :, :t].copy_(k)
                self.v_cache[i][:, :, :t].copy_(v)
            else:
                self.k_cache[i].index_copy_(2, self.pos, k)
                self.v_cache[i].index_copy_(2, self.pos, v)
        if prefill:
            with op("_context_attention_kernel"):
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            with op("_token_attention_kernel"):
                mask = (self.arange <= self.pos).view(1, 1, 1, self.max_len)
                o = F.scaled_dot_product_attention(
                    q, self.k_cache[i], self.v_cache[i], attn_mask=mask
                )
        with op("_get_o"):
            o = o.transpose(1, 2).reshape(b, t, self.h_loc * self.hd) @ w["w_o"]
        all_reduce(o)
        x = x + o
        with op("_ffn_norm"):
            h = self.rmsnorm(x, w["ffn_norm"])
        with op("_ffn"):
            gate, up = (h @ w["w_gate_up"]).chunk(2, dim=-1)
            f = (F.silu(gate) * up) @ w["w_down"]
        all_reduce(f)
        return x + f

    def forward(self, ids: torch.Tensor, prefill: bool) -> torch.Tensor:
        with op("_embed"):
            x = self.embed[ids]
        for i in range(self.a.layers):
            with FACTS.r(nr.layer(i)):
                x = self.layer(i, x, prefill)
        with op("_lm_head"):
            logits = self.rmsnorm(x[:, -1], self.final_norm) @ self.lm_head
        return logits.argmax(-1)

    def prefill(self, prompt: torch.Tensor) -> None:
        self.tokens.copy_(self.forward(prompt, prefill=True))
        self.pos.fill_(prompt.shape[1])

    def decode_step(self) -> None:
        self.tokens.copy_(self.forward(self.tokens.view(-1, 1), prefill=False))
        self.pos.add_(1)


# --- the loop --------------------------------------------------------------------


class Timer:
    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.pairs: dict[str, list[Any]] = defaultdict(list)

    def mark(self, phase: str, which: int) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
        else:
            e = time.perf_counter()
        if which == 0:
            self.pairs[phase].append([e, None])
        else:
            self.pairs[phase][-1][1] = e

    def ms(self) -> dict[str, float]:
        out = {}
        for p, pairs in self.pairs.items():
            if self.cuda:
                out[p] = sum(s.elapsed_time(e) for s, e in pairs)
            else:
                out[p] = sum((e - s) * 1e3 for s, e in pairs)
        return out


def generate(m: TPDecoder, prompt: torch.Tensor, timer: Timer | None, graph: Any) -> None:
    a = m.a
    FACTS.phase = "prefill"
    if timer:
        timer.mark("prefill", 0)
    with (
        FACTS.r(nr.phase("prefill")),
        FACTS.r(nr.step(batch_size=a.batch, tokens=a.batch * a.prompt_len)),
    ):
        m.prefill(prompt)
    if timer:
        timer.mark("prefill", 1)
    FACTS.phase = "decode"
    if timer:
        timer.mark("decode", 0)
    with FACTS.r(nr.phase("decode")):
        for _ in range(a.gen_len):
            with FACTS.r(nr.step(batch_size=a.batch, tokens=a.batch)):
                if graph is not None:
                    graph.replay()
                    if FACTS.on:
                        FACTS.graph_replays["decode"] += 1
                else:
                    m.decode_step()
    if timer:
        timer.mark("decode", 1)
    FACTS.phase = "none"


def capture_graph(m: TPDecoder) -> tuple[Any, int]:
    """One CUDA graph of a whole decode step; returns it and its all_reduce count.

    The eager warm-up steps and the capture both run inside ``phase:graph_capture``
    so their kernels and collectives are attributed, not left phaseless.
    """
    g = torch.cuda.CUDAGraph()
    FACTS.phase = "graph_capture"
    with FACTS.r(nr.phase("graph_capture")):
        m.pos.fill_(m.a.prompt_len)  # keep warm-up steps inside the KV cache
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm up on a side stream, as graph capture needs
            for _ in range(2):
                m.decode_step()
        torch.cuda.current_stream().wait_stream(s)
        before = FACTS.all_reduce_calls["graph_capture"]
        with torch.cuda.graph(g):
            m.decode_step()
        captured = FACTS.all_reduce_calls["graph_capture"] - before
    FACTS.phase = "none"
    return g, captured


def versions(cuda: bool, device: torch.device) -> dict[str, Any]:
    v: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    v["cuda"] = torch.version.cuda
    v["nvtx_backend"] = nr.NVTX_BACKEND
    if cuda:
        v["gpu"] = torch.cuda.get_device_name(device)
        v["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        try:
            q = [
                "nvidia-smi",
                "--query-gpu=driver_version",
                "--format=csv,noheader",
                "-i",
                str(device.index),
            ]
            v["driver"] = subprocess.run(
                q, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            v["driver"] = None
    return v


def init_dist(cuda: bool) -> tuple[int, int, int]:
    if "RANK" not in os.environ:  # plain `python`: a world of one
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(port))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), local


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument(
        "--ffn", type=int, default=0, help="FFN width (default 8/3·hidden, rounded to 256)"
    )
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen-len", type=int, default=16)
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="default bf16 on GPU, fp32 on CPU"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--profiler", choices=["torch", "none"], default="none")
    p.add_argument(
        "--cuda-graph", action="store_true", help="replay decode steps from one CUDA graph"
    )
    p.add_argument("--warmup", type=int, default=1, help="untraced generations before the window")
    p.add_argument("--iters", type=int, default=1, help="traced generations in the window")
    p.add_argument("--out", type=Path, default=Path("tp_decoder_out"))
    p.add_argument(
        "--hang-dump", type=float, default=0, help="dump stacks and exit after N s (debug)"
    )
    a = p.parse_args(argv)
    if not a.ffn:
        a.ffn = 256 * math.ceil(8 * a.hidden / 3 / 256)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.hang_dump:
        faulthandler.dump_traceback_later(a.hang_dump, exit=True)
    cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    a.dtype = a.dtype or ("bf16" if cuda else "fp32")
    if a.cuda_graph and not cuda:
        raise SystemExit("--cuda-graph needs a GPU")
    rank, world, local = init_dist(cuda)
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    torch.manual_seed(0)
    a.out.mkdir(parents=True, exist_ok=True)
    m = TPDecoder(a, rank, world, device)
    prompt = torch.randint(
        0, a.vocab, (a.batch, a.prompt_len), generator=torch.Generator().manual_seed(7)
    )
    prompt = prompt.to(device)

    with torch.inference_mode():
        for _ in range(a.warmup):
            generate(m, prompt, None, None)
        if cuda:
            torch.cuda.synchronize()
        # a gloo barrier launches no GPU work, so it leaves the traced window clean
        cpu_group = dist.new_group(backend="gloo") if cuda else None
        dist.barrier(group=cpu_group)

        prof = None
        if a.profiler == "torch":
            acts = [torch.profiler.ProfilerActivity.CPU]
            if cuda:
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            prof = torch.profiler.profile(activities=acts, record_shapes=True)
            prof.__enter__()
        if cuda:
            torch.cuda.cudart().cudaProfilerStart()
        t0 = time.perf_counter()
        FACTS.on = True
        graph, graph_ar = None, 0
        if a.cuda_graph:
            graph, graph_ar = capture_graph(m)
        timer = Timer(cuda)
        for _ in range(a.iters):
            generate(m, prompt, timer, graph)
        FACTS.on = False
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        dist.barrier(group=cpu_group)  # all ranks done before nsys's range ends
        if cuda:
            torch.cuda.cudart().cudaProfilerStop()
        if prof is not None:
            prof.__exit__(None, None, None)
            prof.export_chrome_trace(str(a.out / f"trace_rank{rank}.pt.trace.json.gz"))

    phases: dict[str, Any] = {}
    gpu_ms = timer.ms()
    for ph, counts in sorted(FACTS.ranges.items()):
        replays = FACTS.graph_replays.get(ph, 0)
        phases[ph] = {
            "phase_ranges": counts.get(f"phase:{ph}", 0),
            "steps": counts.get("step", 0),
            "all_reduce_calls": FACTS.all_reduce_calls.get(ph, 0),
            "graph_replays": replays,
            # captured calls are recorded into the graph, not run; replays run them
            "all_reduce_captured": graph_ar if ph == "graph_capture" else 0,
            "all_reduce_executed": FACTS.all_reduce_calls.get(ph, 0)
            - (graph_ar if ph == "graph_capture" else 0)
            + replays * graph_ar,
            "ranges": dict(sorted(counts.items())),
            "time_ms": gpu_ms.get(ph),
        }
    facts = {
        "program": "examples/tp_decoder.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "rank": rank,
        "world_size": world,
        "backend": dist.get_backend(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "time_source": "cuda_event" if cuda else "perf_counter",
        "window_wall_s": wall,
        "phases": phases,
        "step_payload": {
            "prefill": {"batch_size": a.batch, "tokens": a.batch * a.prompt_len},
            "decode": {"batch_size": a.batch, "tokens": a.batch},
        },
        "versions": versions(cuda, device),
    }
    (a.out / f"facts_rank{rank}.json").write_text(json.dumps(facts, indent=1) + "\n")
    dist.barrier(group=cpu_group)
    if rank == 0:
        pt = {p: round(v["time_ms"] or 0, 3) for p, v in phases.items()}
        print(
            f"tp_decoder: world {world}, {a.layers} layers, phase ms {pt}, wrote {a.out}",
            flush=True,
        )
    if graph is not None:
        # Seen on 2xH200 (torch 2.11, NCCL 2.28): destroying the NCCL process group
        # after replaying a graph with captured all_reduces hangs.  All output is
        # written by now, so leave without tearing NCCL down.
        graph.reset()
        sys.stderr.flush()
        os._exit(0)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
