"""Phase maps: which ranges are phases, steps and layers, and which are operators.

A phase map is an ordered list of ``(regex, phase)`` rules plus three lists of
structural patterns.  It is read from a TOML file or named by preset::

    name = "lightllm"
    step = []                    # ranges whose instances number steps (else the phase range does)
    layer = ['^layer\\.(?P<layer>\\d+)$']   # per-layer ranges: never the op
    skip = ['^NCCL:']            # neither op nor phase (framework or library ranges)
    [[phase]]                    # (tables come after the top-level keys in TOML)
    pattern = '^prefill$'        # re.search against the range text
    phase = "prefill"             # or omit and use a named group (?P<phase>...)
    [[phase]]
    pattern = '^decode$'
    phase = "decode"

Presets live in ``tracekit/phasemaps/*.toml``.  ``auto`` picks, per input, the
first preset in ``AUTO_ORDER`` whose phase rules match at least one range name.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tracekit.errors import TracekitError

AUTO_ORDER = ("tracekit", "lightllm", "vllm", "sglang", "trtllm")


@dataclass(frozen=True)
class PhaseRule:
    pattern: re.Pattern[str]
    phase: str | None  # None: take the named group "phase"

    def match(self, name: str) -> str | None:
        m = self.pattern.search(name)
        if m is None:
            return None
        if self.phase is not None:
            return self.phase
        got = m.groupdict().get("phase")
        return got if got else None


@dataclass(frozen=True)
class PhaseMap:
    name: str
    rules: tuple[PhaseRule, ...]
    step: tuple[re.Pattern[str], ...] = ()
    layer: tuple[re.Pattern[str], ...] = ()
    skip: tuple[re.Pattern[str], ...] = ()
    source: str = ""
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def phase_of(self, name: str) -> str | None:
        """The phase a range name stands for, or None.

        >>> load("lightllm").phase_of("decode")
        'decode'
        """
        for rule in self.rules:
            got = rule.match(name)
            if got is not None:
                return got
        return None

    def is_step(self, name: str) -> bool:
        return any(p.search(name) for p in self.step)

    def layer_of(self, name: str) -> int | None:
        for p in self.layer:
            m = p.search(name)
            if m is not None:
                g = m.groupdict().get("layer")
                return int(g) if g is not None and g.isdigit() else -1
        return None

    def is_skip(self, name: str) -> bool:
        return any(p.search(name) for p in self.skip)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "phase": [{"pattern": r.pattern.pattern, "phase": r.phase} for r in self.rules],
            "step": [p.pattern for p in self.step],
            "layer": [p.pattern for p in self.layer],
            "skip": [p.pattern for p in self.skip],
        }


def presets() -> list[str]:
    """Names of the shipped presets (plus ``auto``)."""
    return list(_preset_names())


@functools.cache
def _preset_names() -> tuple[str, ...]:
    files = resources.files("tracekit.phasemaps").iterdir()
    return tuple(sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml")))


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise TracekitError(f"Phase map {where}: bad regular expression {pattern!r} ({exc}).") from None


def parse(text: str, *, name: str, source: str) -> PhaseMap:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TracekitError(f"Phase map {source} is not valid TOML ({exc}).") from None
    unknown = set(doc) - {"name", "description", "phase", "step", "layer", "skip"}
    if unknown:
        raise TracekitError(f"Phase map {source}: unknown key(s) {', '.join(sorted(unknown))}.")
    rules = []
    for i, entry in enumerate(doc.get("phase", [])):
        if isinstance(entry, dict) and set(entry) - {"pattern", "phase"}:
            extra = ", ".join(sorted(set(entry) - {"pattern", "phase"}))
            raise TracekitError(
                f"Phase map {source}: [[phase]] entry {i + 1} has unknown key(s) {extra} "
                "(put step/layer/skip before the first [[phase]])."
            )
        if not isinstance(entry, dict) or "pattern" not in entry:
            raise TracekitError(f"Phase map {source}: [[phase]] entry {i + 1} has no 'pattern'.")
        pat = _compile(str(entry["pattern"]), source)
        phase = entry.get("phase")
        if phase is None and "phase" not in pat.groupindex:
            raise TracekitError(
                f"Phase map {source}: [[phase]] entry {i + 1} needs 'phase' or a (?P<phase>...) group."
            )
        rules.append(PhaseRule(pat, None if phase is None else str(phase)))
    if not rules:
        raise TracekitError(f"Phase map {source} has no [[phase]] rules.")

    def pats(key: str) -> tuple[re.Pattern[str], ...]:
        return tuple(_compile(str(p), source) for p in doc.get(key, []))

    return PhaseMap(
        name=str(doc.get("name", name)),
        rules=tuple(rules),
        step=pats("step"),
        layer=pats("layer"),
        skip=pats("skip"),
        source=source,
    )


def load(spec: str | Path) -> PhaseMap:
    """Load a preset by name or a TOML file by path.

    >>> load("tracekit").name
    'tracekit'
    """
    path = Path(spec)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise TracekitError(f"Phase map file {path} does not exist.")
        return parse(path.read_text(), name=path.stem, source=str(path))
    name = str(spec)
    if name not in presets():
        raise TracekitError(
            f"Unknown phase map {name!r}: use a TOML file or one of auto, {', '.join(presets())}."
        )
    return _preset(name)


@functools.cache
def _preset(name: str) -> PhaseMap:
    """A shipped preset, parsed once per process (a PhaseMap is immutable)."""
    text = resources.files("tracekit.phasemaps").joinpath(f"{name}.toml").read_text()
    return parse(text, name=name, source=f"preset:{name}")


def choose(spec: str | Path, range_names: list[str]) -> PhaseMap:
    """Resolve ``auto`` against the distinct range names of a trace.

    Returns the first preset in AUTO_ORDER with a phase rule that matches some name;
    when none matches, the ``tracekit`` preset (every GPU activity stays unphased).
    """
    if str(spec) != "auto":
        return load(spec)
    for name in AUTO_ORDER:
        if name not in presets():
            continue
        pm = load(name)
        if any(pm.phase_of(n) is not None for n in range_names):
            return pm
    return load("tracekit")
