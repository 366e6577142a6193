"""Ranges that Nsight Systems (NVTX) and torch.profiler (Kineto) both see.

Backends are chosen once, at import:

- NVTX: the ``nvtx`` package when importable (default NVTX domain, registered
  strings), else ``torch.cuda.nvtx`` when this torch build has it, else nothing.
  The default domain is used on purpose: ``torch.cuda.nvtx`` can only write there,
  so a range reads the same whichever backend wrote it, and readers need not know
  about domains (NCCL's own ranges stay in domain "NCCL").
- Kineto: ``torch.profiler.record_function`` (Kineto category ``user_annotation``),
  entered only while a torch profiler is running, so the common case costs one
  C call.

Payloads (``step(batch_size=8, tokens=1024)``) never change the range text, which
phase maps match.  They travel as one *payload marker* emitted right after the range
opens, on the same thread, inside it: the text
``tracekit.payload:batch_size=8,tokens=1024``.  In nsys exports it is an NVTX mark
(``NVTX_EVENTS.eventType`` 34, ``end`` NULL); in Kineto JSON it is a zero-length
``cpu_op`` of that name whose ``args`` also hold the typed values
(``{"batch_size": 8, "tokens": 1024}``) when the profiler records shapes.  A reader
attaches a marker's values to the innermost range open on that thread at its time.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

PAYLOAD_PREFIX = "tracekit.payload:"

# --- switches -------------------------------------------------------------------

_enabled = os.environ.get("TRACEKIT_NVTX", "1").strip().lower() not in ("0", "false", "off", "no")


def enable() -> None:
    """Turn annotation on (the default unless ``TRACEKIT_NVTX=0``)."""
    global _enabled
    _enabled = True


def disable() -> None:
    """Turn annotation off: ranges then cost one attribute check each."""
    global _enabled
    _enabled = False


def enabled() -> bool:
    """Whether ranges are emitted now.

    >>> import nvtx_ranges
    >>> nvtx_ranges.enabled() in (True, False)
    True
    """
    return _enabled


# --- backends -------------------------------------------------------------------

_nvtx_push: Callable[[str], object] | None = None
_nvtx_pop: Callable[[], object] | None = None
_nvtx_mark: Callable[[str], object] | None = None
NVTX_BACKEND = "none"

try:
    import nvtx as _nvtx_pkg

    if _nvtx_pkg.enabled():  # False (dummy domain) when no tool injected NVTX
        _dom = _nvtx_pkg.get_domain(None)
        _attrs: dict[str, Any] = {}

        def _attr(name: str) -> Any:
            a = _attrs.get(name)
            if a is None:
                a = _attrs[name] = _dom.get_event_attributes(message=name)
            return a

        def _pkg_push(name: str) -> None:
            _dom.push_range(_attr(name))

        def _pkg_mark(name: str) -> None:
            _dom.mark(_attr(name))

        _nvtx_push, _nvtx_pop, _nvtx_mark = _pkg_push, _dom.pop_range, _pkg_mark
    NVTX_BACKEND = "nvtx"
except ImportError:
    _nvtx_pkg = None

try:
    import torch as _torch

    _profiler_on: Callable[[], bool] = _torch._C._autograd._profiler_enabled
    _rf_enter = _torch.ops.profiler._record_function_enter_new
    _rf_exit = _torch.ops.profiler._record_function_exit._RecordFunction
    _rf_fast = _torch._C._profiler._RecordFunctionFast
    HAVE_TORCH = True
    if _nvtx_pkg is None and hasattr(_torch._C, "_nvtx"):
        _tn = _torch._C._nvtx
        _nvtx_push = _tn.rangePushA
        _nvtx_pop = _tn.rangePop
        _nvtx_mark = _tn.markA
        NVTX_BACKEND = "torch.cuda.nvtx"
except ImportError:  # dependency-light: NVTX alone still works
    HAVE_TORCH = False

    def _profiler_on() -> bool:
        return False


def _payload_text(payload: dict[str, Any]) -> str:
    return PAYLOAD_PREFIX + ",".join(f"{k}={v}" for k, v in payload.items())


def _emit_payload(payload: dict[str, Any], kineto: bool) -> None:
    text = _payload_text(payload)
    if _nvtx_mark is not None:
        _nvtx_mark(text)
    if kineto:
        rf = _rf_fast(text, [], {k: v for k, v in payload.items() if isinstance(v, int | float)})
        rf.__enter__()
        rf.__exit__(None, None, None)


# --- the range ------------------------------------------------------------------

_OFF = object()  # entry tokens: nothing opened / only NVTX opened / else a Kineto handle
_NVTX = object()
_EMPTY = object()


class Range:
    """One annotated range: a context manager and a decorator.

    What each entry opened is remembered on the object (a list only when it is
    entered again before it exits, i.e. recursion), so each exit closes exactly that,
    even if profiling or annotation was switched meanwhile.  A decorated function
    enters a fresh Range per call, so decorators are thread-safe; share one Range
    object between threads only through ``with`` on separate objects.
    """

    __slots__ = ("_more", "_tok", "name", "payload")

    def __init__(self, name: str, payload: dict[str, Any] | None = None) -> None:
        self.name = name
        self.payload = payload or None
        self._tok: Any = _EMPTY
        self._more: list[Any] | None = None

    def _push(self, token: Any) -> None:
        if self._tok is _EMPTY:
            self._tok = token
        elif self._more is None:
            self._more = [token]
        else:
            self._more.append(token)

    def __enter__(self) -> Range:
        if not _enabled:
            self._push(_OFF)
            return self
        token: Any = _OFF
        if _nvtx_push is not None:
            _nvtx_push(self.name)
            token = _NVTX
        kineto = _profiler_on()
        if kineto:
            token = _rf_enter(self.name, None)
        if self.payload is not None and token is not _OFF:
            _emit_payload(self.payload, kineto)
        self._push(token)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._more:
            token = self._more.pop()
        else:
            token, self._tok = self._tok, _EMPTY
        if token is _OFF:
            return
        if token is not _NVTX:
            _rf_exit(token)
        if _nvtx_pop is not None:
            _nvtx_pop()

    def __call__(self, func: F) -> F:
        name, payload = self.name, self.payload

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not _enabled:
                return func(*args, **kwargs)
            with Range(name, payload):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Range({self.name!r}, {self.payload!r})"


# --- the vocabulary (names matched by tracekit/phasemaps/tracekit.toml) ---------


def phase(name: str, **payload: Any) -> Range:
    """A phase of inference; the range text is ``phase:<name>``.

    >>> with phase("decode", batch_size=8):
    ...     pass
    """
    return Range(f"phase:{name}", payload)


def step(**payload: Any) -> Range:
    """One forward step (a batch through the model); the range text is ``step``.

    Payload keys such as ``batch_size``, ``tokens``, ``requests`` go to the payload
    marker, not into the text.

    >>> with step(batch_size=8, tokens=8):
    ...     pass
    """
    return Range("step", payload)


def layer(i: int) -> Range:
    """One transformer layer; the range text is ``layer.<i>``.

    >>> @layer(0)
    ... def block(x):
    ...     return x
    """
    return Range(f"layer.{int(i)}")


def op(name: str, **payload: Any) -> Range:
    """An operator; the range text is ``name`` verbatim (e.g. ``_ffn``, ``all_reduce``).

    >>> with op("_ffn"):
    ...     pass
    """
    return Range(name, payload)
