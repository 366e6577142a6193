from __future__ import annotations

from pathlib import Path

import pytest

from tracekit.errors import TracekitError
from tracekit.phasemap import choose, load, presets


def test_presets_listed() -> None:
    assert {"tracekit", "lightllm"} <= set(presets())


@pytest.mark.parametrize(
    ("preset", "name", "phase"),
    [
        ("tracekit", "phase:prefill", "prefill"),
        ("tracekit", "phase:decode", "decode"),
        ("tracekit", "_ffn", None),
        ("lightllm", "prefill", "prefill"),
        ("lightllm", "decode", "decode"),
        ("lightllm", "_token_attention_kernel", None),
    ],
)
def test_phase_rules(preset: str, name: str, phase: str | None) -> None:
    assert load(preset).phase_of(name) == phase


def test_lightllm_layers_are_not_ops() -> None:
    pm = load("lightllm")
    assert pm.layer_of("layer.12") == 12
    assert pm.layer_of("_ffn") is None
    assert pm.is_skip("NCCL:ncclAllReduce")


def test_auto_picks_the_preset_that_matches() -> None:
    assert choose("auto", ["prefill", "_ffn", "decode"]).name == "lightllm"
    assert choose("auto", ["phase:decode", "step", "_ffn"]).name == "tracekit"
    assert choose("auto", ["aten::mm"]).name == "tracekit"


def test_toml_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(
        "step = ['^iter$']\n[[phase]]\npattern = '^fwd_(?P<phase>\\w+)$'\n"
        "[[phase]]\npattern = '^warm'\nphase = 'warmup'\n"
    )
    pm = load(f)
    assert pm.phase_of("fwd_decode") == "decode"
    assert pm.phase_of("warmup_3") == "warmup"
    assert pm.is_step("iter")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[phase]]\npattern = '('\nphase='x'\n", "bad regular expression"),
        ("[[phase]]\nphase = 'x'\n", "has no 'pattern'"),
        ("[[phase]]\npattern = 'x'\n", "needs 'phase'"),
        ("[[phase]]\npattern = 'x'\nphase='p'\nskip=['y']\n", "unknown key"),
        ("name = 'x'\n", "no [[phase]] rules"),
        ("[[phase\n", "not valid TOML"),
    ],
)
def test_bad_phase_maps(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(TracekitError, match=needle.replace("[", r"\[")):
        load(f)


def test_unknown_preset() -> None:
    with pytest.raises(TracekitError, match="Unknown phase map"):
        load("nosuch")
