"""Annotate a torch.nn.Module tree without editing the model's code.

``instrument(model)`` walks ``model.named_modules()`` and, for the first rule that
matches each module (by class name and/or a regex on its qualified name), registers
a forward pre-hook that opens a range and a forward hook (``always_call=True``, so an
exception still closes it) that closes it.  ``handle.remove()`` takes every hook off.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from nvtx_ranges._core import Range, layer, op


@dataclass(frozen=True)
class Rule:
    """Which modules to wrap and what range to open around their forward.

    ``cls``: class name (``type(m).__name__`` or any base class name); ``name``: regex
    searched in the qualified module name; both given means both must match.
    ``op``: the operator name to emit, or ``layer=True`` to emit ``layer.<i>`` with i
    from the regex group ``layer`` or else the last integer in the module name.
    """

    op: str | None = None
    cls: str | None = None
    name: str | None = None
    layer: bool = False

    def matches(self, qualname: str, module: Any) -> bool:
        if self.cls is not None and self.cls not in {c.__name__ for c in type(module).__mro__}:
            return False
        return self.name is None or re.search(self.name, qualname) is not None

    def range_for(self, qualname: str) -> Range:
        if self.layer:
            idx: str | None = None
            if self.name is not None:
                m = re.search(self.name, qualname)
                idx = m.groupdict().get("layer") if m else None
            if idx is None:
                nums = re.findall(r"\d+", qualname)
                idx = nums[-1] if nums else "0"
            return layer(int(idx))
        assert self.op is not None, "a Rule needs op=... or layer=True"
        return op(self.op)


# LightLLM-like operator names for Llama-style models (Hugging Face's Llama*, and
# the examples/tp_decoder.py modules).  Order matters: the first matching rule wins.
LLAMA_RULES: tuple[Rule, ...] = (
    Rule(layer=True, cls="LlamaDecoderLayer"),
    Rule(layer=True, name=r"(?:^|\.)layers\.(?P<layer>\d+)$"),
    Rule(op="_att_norm", name=r"(?:^|\.)input_layernorm$"),
    Rule(op="_ffn_norm", name=r"(?:^|\.)post_attention_layernorm$"),
    Rule(op="_final_norm", name=r"(?:^|\.)norm$"),
    Rule(op="_embed", name=r"(?:^|\.)embed_tokens$"),
    Rule(op="_lm_head", name=r"(?:^|\.)lm_head$"),
    Rule(op="_rotary_emb", cls="LlamaRotaryEmbedding"),
    Rule(op="_get_qkv", name=r"(?:^|\.)(?:q_proj|k_proj|v_proj|qkv_proj)$"),
    Rule(op="_get_o", name=r"(?:^|\.)o_proj$"),
    Rule(op="_attention", cls="LlamaAttention"),
    Rule(op="_attention", cls="LlamaSdpaAttention"),
    Rule(op="_attention", cls="LlamaFlashAttention2"),
    Rule(op="_ffn", cls="LlamaMLP"),
    Rule(op="_rmsnorm", cls="LlamaRMSNorm"),
)


class InstrumentHandle:
    """What ``instrument`` did: ``.wrapped`` maps module names to range text."""

    def __init__(self) -> None:
        self._hooks: list[Any] = []
        self.wrapped: dict[str, str] = {}

    def remove(self) -> None:
        """Remove every hook ``instrument`` registered (idempotent)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.wrapped.clear()

    def __enter__(self) -> InstrumentHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def instrument(
    model: Any, rules: Sequence[Rule] | Iterable[Rule] = LLAMA_RULES
) -> InstrumentHandle:
    """Wrap the forwards of matching submodules of ``model`` in ranges.

    >>> import torch
    >>> from nvtx_ranges import instrument, Rule
    >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> h = instrument(m, [Rule(op="_linear", cls="Linear")])
    >>> h.wrapped
    {'0': '_linear'}
    >>> h.remove()
    """
    rules = tuple(rules)
    handle = InstrumentHandle()
    for qualname, module in model.named_modules():
        rule = next((r for r in rules if r.matches(qualname, module)), None)
        if rule is None:
            continue
        rng = rule.range_for(qualname)
        open_: threading.local = threading.local()  # per thread: ranges this module opened

        def pre(_m: Any, _args: Any, rng: Range = rng, open_: threading.local = open_) -> None:
            r = Range(rng.name)
            stack = open_.__dict__.setdefault("s", [])
            stack.append(r)
            r.__enter__()

        def post(_m: Any, _a: Any, _o: Any, open_: threading.local = open_) -> None:
            stack = open_.__dict__.get("s")
            if stack:  # always_call also fires when the pre-hook never ran
                stack.pop().__exit__(None, None, None)

        handle._hooks.append(module.register_forward_pre_hook(pre))
        handle._hooks.append(module.register_forward_hook(post, always_call=True))
        handle.wrapped[qualname] = rng.name
    return handle
