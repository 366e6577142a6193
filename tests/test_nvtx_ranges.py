"""nvtx_ranges under torch.profiler on CPU: names, nesting, payloads, decorators,
instrument/remove and the off switch.  Expected names come from the API contract
(tracekit/phasemaps/tracekit.toml), counts from what each test itself calls."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import nvtx_ranges as nr  # noqa: E402
from tracekit.phasemap import load  # noqa: E402


def trace(fn, tmp_path: Path) -> list[dict]:
    """Run fn under the CPU profiler; return the Kineto events (raw JSON)."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        fn()
    out = tmp_path / f"t{len(list(tmp_path.iterdir()))}.json"
    p.export_chrome_trace(str(out))
    return [e for e in json.loads(out.read_text())["traceEvents"] if e.get("ph") == "X"]


def ranges(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("cat") == "user_annotation"]


def inside(child: dict, parent: dict) -> bool:
    return (
        child["tid"] == parent["tid"]
        and child["ts"] >= parent["ts"]
        and child["ts"] + child["dur"] <= parent["ts"] + parent["dur"] + 1e-3
    )


@pytest.fixture(autouse=True)
def _enabled():
    nr.enable()
    yield
    nr.enable()


def test_names_and_nesting(tmp_path):
    def loop():
        with nr.phase("prefill"), nr.step(batch_size=8, tokens=128):
            for i in range(2):
                with nr.layer(i), nr.op("_ffn"):
                    torch.ones(4).add_(1)
        with nr.phase("decode"):
            for _ in range(3):
                with nr.step(batch_size=8, tokens=8), nr.layer(0), nr.op("_get_qkv"):
                    torch.ones(4).mul_(2)

    ev = trace(loop, tmp_path)
    rs = ranges(ev)
    names = Counter(e["name"] for e in rs)
    assert names == {
        "phase:prefill": 1,
        "phase:decode": 1,
        "step": 4,
        "layer.0": 4,
        "layer.1": 1,
        "_ffn": 2,
        "_get_qkv": 3,
    }
    by = {n: [e for e in rs if e["name"] == n] for n in names}
    (prefill,), (decode,) = by["phase:prefill"], by["phase:decode"]
    assert sum(inside(s, prefill) for s in by["step"]) == 1
    assert sum(inside(s, decode) for s in by["step"]) == 3
    for q in by["_get_qkv"]:
        assert any(inside(q, la) for la in by["layer.0"])
        assert inside(q, decode)
    for f in by["_ffn"]:
        assert inside(f, prefill)
    # every aten op ran inside an operator range
    for a in (e for e in ev if e["name"] in ("aten::add_", "aten::mul_")):
        assert any(inside(a, r) for r in by["_ffn"] + by["_get_qkv"])


def test_names_match_tracekit_phase_map():
    pm = load("tracekit")
    assert pm.phase_of(nr.phase("prefill").name) == "prefill"
    assert pm.phase_of(nr.phase("decode").name) == "decode"
    assert pm.is_step(nr.step(batch_size=1).name)
    assert pm.layer_of(nr.layer(7).name) == 7
    for name in ("_ffn", "_get_qkv", "all_reduce", "_context_attention_kernel"):
        rng = nr.op(name)
        assert rng.name == name
        assert pm.phase_of(name) is None and not pm.is_step(name) and pm.layer_of(name) is None


def test_payload_marker(tmp_path):
    def loop():
        with nr.step(batch_size=8, tokens=1024):
            pass

    ev = trace(loop, tmp_path)
    (st,) = ranges(ev)
    (mk,) = [e for e in ev if e["name"].startswith(nr.PAYLOAD_PREFIX)]
    assert mk["name"] == "tracekit.payload:batch_size=8,tokens=1024"
    assert mk["args"]["batch_size"] == 8 and mk["args"]["tokens"] == 1024
    assert inside(mk, st)
    assert st["name"] == "step"  # the payload never changes the range text


def test_decorator(tmp_path):
    @nr.op("_dec")
    def f(x):
        """doc"""
        return x + 1

    @nr.layer(3)
    def g(x):
        return f(x)

    assert f.__name__ == "f" and f.__doc__ == "doc"
    ev = trace(lambda: [g(torch.ones(2)) for _ in range(3)], tmp_path)
    rs = ranges(ev)
    assert Counter(e["name"] for e in rs) == {"layer.3": 3, "_dec": 3}
    for d in (e for e in rs if e["name"] == "_dec"):
        assert any(inside(d, la) for la in rs if la["name"] == "layer.3")


def test_reentrant_same_object(tmp_path):
    r = nr.op("_rec")

    def rec(n):
        with r:
            if n:
                rec(n - 1)

    ev = trace(lambda: rec(2), tmp_path)
    assert Counter(e["name"] for e in ranges(ev)) == {"_rec": 3}


def test_disabled_emits_nothing(tmp_path):
    @nr.op("_dec")
    def f():
        return 1

    def loop():
        with nr.phase("decode"), nr.step(tokens=1), nr.layer(0), nr.op("_ffn"):
            f()

    nr.disable()
    assert not nr.enabled()
    ev = trace(loop, tmp_path)
    assert ranges(ev) == []
    assert not [e for e in ev if e["name"].startswith(nr.PAYLOAD_PREFIX)]
    nr.enable()
    assert len(ranges(trace(loop, tmp_path))) == 5


def test_toggle_inside_a_range_stays_balanced(tmp_path):
    def loop():
        with nr.op("_outer"):
            nr.disable()
            with nr.op("_inner"):
                nr.enable()  # exit of _inner must not close _outer
            with nr.op("_after"):
                pass

    rs = ranges(trace(loop, tmp_path))
    assert Counter(e["name"] for e in rs) == {"_outer": 1, "_after": 1}
    outer = next(e for e in rs if e["name"] == "_outer")
    assert inside(next(e for e in rs if e["name"] == "_after"), outer)


def test_env_var_off_switch():
    code = "import nvtx_ranges as n; print(n.enabled())"
    for val, want in (("0", "False"), ("1", "True"), ("off", "False")):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"TRACEKIT_NVTX": val, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert out.stdout.strip() == want


def test_works_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import nvtx_ranges as n\n"
        "assert not n._core.HAVE_TORCH\n"
        "with n.phase('prefill'), n.step(tokens=3), n.layer(1), n.op('_ffn'): pass\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "ok"


# --- instrument -------------------------------------------------------------------


class LlamaRMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * self.w


class LlamaAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        a = torch.softmax(q @ k.transpose(-1, -2), -1) @ v
        return self.o_proj(a)


class LlamaMLP(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = (nn.Linear(d, d) for _ in range(3))

    def forward(self, x):
        return self.down_proj(torch.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(d)
        self.self_attn = LlamaAttention(d)
        self.post_attention_layernorm = LlamaRMSNorm(d)
        self.mlp = LlamaMLP(d)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, d=8, n=2, vocab=11):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(LlamaDecoderLayer(d) for _ in range(n))
        self.norm = LlamaRMSNorm(d)
        self.lm_head = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for blk in self.layers:
            x = blk(x)
        return self.lm_head(self.norm(x))


def test_instrument_llama_and_remove(tmp_path):
    m = LlamaModel()
    ids = torch.randint(0, 11, (2, 3))
    h = nr.instrument(m)
    assert h.wrapped["layers.1"] == "layer.1"
    assert h.wrapped["layers.0.self_attn.q_proj"] == "_get_qkv"
    ev = trace(lambda: m(ids), tmp_path)
    rs = ranges(ev)
    assert Counter(e["name"] for e in rs) == {
        "_embed": 1,
        "layer.0": 1,
        "layer.1": 1,
        "_att_norm": 2,
        "_attention": 2,
        "_get_qkv": 6,
        "_get_o": 2,
        "_ffn_norm": 2,
        "_ffn": 2,
        "_final_norm": 1,
        "_lm_head": 1,
    }
    l1 = next(e for e in rs if e["name"] == "layer.1")
    att_in_l1 = [e for e in rs if e["name"] == "_attention" and inside(e, l1)]
    assert len(att_in_l1) == 1
    assert sum(inside(e, att_in_l1[0]) for e in rs if e["name"] == "_get_qkv") == 3
    # softmax ran in _attention itself, not inside a projection
    sm = [e for e in ev if e["name"] == "aten::softmax"]
    assert sm and all(any(inside(s, a) for a in rs if a["name"] == "_attention") for s in sm)

    h.remove()
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())
    assert ranges(trace(lambda: m(ids), tmp_path)) == []


def test_instrument_custom_rules_and_exception(tmp_path):
    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    m = nn.Sequential(nn.Linear(2, 2), Boom())
    rules = [nr.Rule(op="_lin", cls="Linear"), nr.Rule(op="_boom", name=r"^1$")]
    with nr.instrument(m, rules) as h:
        assert h.wrapped == {"0": "_lin", "1": "_boom"}

        def run():
            with pytest.raises(ValueError):
                m(torch.ones(1, 2))
            with nr.op("_after"):
                pass

        rs = ranges(trace(run, tmp_path))
    assert Counter(e["name"] for e in rs) == {"_lin": 1, "_boom": 1, "_after": 1}
    boom = next(e for e in rs if e["name"] == "_boom")
    assert not inside(next(e for e in rs if e["name"] == "_after"), boom)
