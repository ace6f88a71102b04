"""Every numeric setting has a declared range, and a value just outside it is refused through the real command lines
(in-process: ``scripts/train.py`` and ``scripts/evaluate.py`` run as ``__main__``) in one ``error:`` line naming the
field, the value and the range, with a non-zero exit and nothing written."""

import json
import runpy
import sys
import typing
from pathlib import Path

import pytest
import yaml

from opensir_lite.config import TRL_RANGES, PolicyModelConfig, SelfPlayConfig, _field_types, list_recipes
from opensir_lite.evaluation.runner import EvalSettings
from opensir_lite.ranges import Range, above, at_least, between, declared_ranges

ROOT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
CONFIGS = (SelfPlayConfig, PolicyModelConfig)
HINTS = _field_types(CONFIGS)


def _numeric(tp) -> str | None:
    """'int' or 'float' for a numeric field type (optional and list types included), else None."""
    if tp in (int, float):
        return tp.__name__
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return next((kind for a in args if (kind := _numeric(a))), None)


def _is_list(tp) -> bool:
    return typing.get_origin(tp) is list or any(typing.get_origin(a) is list for a in typing.get_args(tp))


RUN_RANGES = {**declared_ranges(SelfPlayConfig, TRL_RANGES), **declared_ranges(PolicyModelConfig, TRL_RANGES)}
RUN_RANGES = {k: v for k, v in RUN_RANGES.items() if k in HINTS}
EVAL_RANGES = declared_ranges(EvalSettings)


def just_outside(rng: Range, kind: str) -> list[float]:
    """The values nearest to the range that it excludes: an open end itself, else one step past a closed end."""
    step = 1 if kind == "int" else 0.001
    out = []
    if rng.low is not None:
        out.append(rng.low if rng.low_open else rng.low - step)
    if rng.high is not None:
        out.append(rng.high if rng.high_open else rng.high + step)
    return [int(v) if kind == "int" else v for v in out]


def test_every_numeric_field_declares_a_range():
    """Our own numeric fields, and every numeric field a packaged recipe sets, have a range (derived fields
    excepted: reward_weights and max_completion_length are computed from the teacher and student ones)."""
    own = {f for cls in CONFIGS for f in cls.__dict__.get("__annotations__", {})}
    numeric_own = {f for f in own if _numeric(HINTS.get(f))}
    assert numeric_own - set(RUN_RANGES) == set()
    used = set()
    for recipe in list_recipes():
        used |= set(yaml.safe_load((ROOT / "opensir_lite" / "recipes" / f"{recipe}.yaml").read_text()))
    numeric_used = {f for f in used if _numeric(HINTS.get(f))}
    assert numeric_used - set(RUN_RANGES) == set()
    numeric_eval = {f.name for f in EvalSettings.__dataclass_fields__.values() if _numeric(f.type)}
    assert numeric_eval - set(EVAL_RANGES) == set()


@pytest.mark.parametrize(
    "rng,inside,outside,text",
    [
        (at_least(1), [1, 2, 10**9], [0, -1, 0.999], ">= 1"),  # closed low end
        (above(0), [1e-12, 3.5], [0, -1e-12], "> 0"),  # open low end
        (between(0, 1), [0, 0.5, 1], [-0.001, 1.001], "in [0, 1]"),  # closed both ends
        (between(0, 1, low_open=True), [1e-9, 1], [0, 1.2], "in (0, 1]"),  # open low, closed high
        (between(0, 1, high_open=True), [0, 0.999], [1, -0.1], "in [0, 1)"),  # closed low, open high
        (at_least(0), [0, 7], [float("nan"), True, "3"], ">= 0"),  # NaN, booleans and text are never numbers
    ],
)
def test_range_contains_and_describe(rng, inside, outside, text):
    assert all(rng.contains(v) for v in inside)
    assert not any(rng.contains(v) for v in outside)
    assert rng.describe() == text


def run_script(script: str, argv: list[str], capsys) -> tuple[int, list[str]]:
    """Run ``scripts/<script>.py`` as __main__ in this process; (exit code, non-empty stderr lines)."""
    old = sys.argv
    sys.argv = [f"scripts/{script}.py", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(ROOT / "scripts" / f"{script}.py"), run_name="__main__")
    finally:
        sys.argv = old
    return exit_info.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_refused(code, lines, out: Path, *words):
    assert code not in (0, None)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and len(lines) == 1, lines
    for word in words:
        assert word in errors[0], errors[0]
    assert not out.exists(), "nothing is written"


def _cli_value(name: str, value) -> list[str]:
    if _is_list(HINTS[name]):  # a list field: the bad value first, then the default's remaining items
        default = SelfPlayConfig.__dataclass_fields__[name].default_factory()
        return [str(value), *(str(v) for v in default[1:])]
    return [str(value)]


RUN_CASES = [
    (name, value)
    for name, rng in sorted(RUN_RANGES.items())
    for value in just_outside(rng, _numeric(HINTS[name]) or "float")
]


@pytest.mark.parametrize("name,value", RUN_CASES, ids=[f"{n}={v}" for n, v in RUN_CASES])
def test_train_refuses_a_value_just_outside_each_range(tmp_path, capsys, name, value):
    out = tmp_path / "out"
    argv = ["--config", "smoke", "--output_dir", str(out), f"--{name}", *_cli_value(name, value)]
    code, lines = run_script("train", argv, capsys)
    shown = repr(float(value)) if _numeric(HINTS[name]) == "float" else repr(int(value))
    shown = f"[{shown}" if _is_list(HINTS[name]) else shown  # a list shows its items
    assert_refused(code, lines, out, f"{name} = {shown}", "is out of range", RUN_RANGES[name].describe())


EVAL_CASES = [(name, value) for name, rng in sorted(EVAL_RANGES.items()) for value in just_outside(rng, "int"
              if EvalSettings.__dataclass_fields__[name].type in ("int", "int | None") else "float")]  # fmt: skip


@pytest.mark.parametrize("name,value", EVAL_CASES, ids=[f"{n}={v}" for n, v in EVAL_CASES])
def test_evaluate_refuses_a_value_just_outside_each_range(tmp_path, capsys, name, value):
    out = tmp_path / "out"
    argv = ["--benchmarks", "gsm8k", "--data_dir", str(FIXTURES), "--output_dir", str(out), f"--{name}", str(value)]
    code, lines = run_script("evaluate", argv, capsys)
    assert_refused(code, lines, out, f"{name} = {value}", EVAL_RANGES[name].describe())


def _write_json(path: Path, payload) -> str:
    path.write_text(json.dumps(payload))
    return str(path)


REGRESSIONS = [
    # The commands of the issue that used to run, crash late, or print an empty table.
    ("train", ["--config", "smoke", "--learning_rate", "-1"], "learning_rate = -1.0 is out of range: must be > 0"),
    ("train", ["--config", "smoke", "--temperature", "0"], "temperature = 0.0 is out of range: must be > 0"),
    ("train", ["--config", "smoke", "--max_steps", "0"], "max_steps = 0 is out of range: must be >= 1"),
    ("evaluate", ["--benchmarks", "gsm8k", "--data_dir", str(FIXTURES), "--limit", "0"], "limit = 0 is out of range"),
    ("evaluate", ["--benchmarks", "gsm8k", "--data_dir", str(FIXTURES), "--limit", "-5"], "limit = -5 is out of"),
    ("evaluate", ["--compare", "{other}", "{results}"], "not a results.json of scripts/evaluate.py"),
    ("evaluate", ["--compare", "{results}", "{samples}"], "not a results.json of scripts/evaluate.py (not JSON"),
    ("evaluate", ["--compare", "{results}", "{missing}"], "results file not found"),
]


@pytest.mark.parametrize("script,argv,message", REGRESSIONS)
def test_regressions(tmp_path, capsys, script, argv, message):
    results = {"gsm8k": {"metrics": {"avg@1": 0.5, "avg@1_se": 0.1}, "rows": 2, "protocol": "strict"}}
    paths = {
        "results": _write_json(tmp_path / "results.json", results),
        "other": _write_json(tmp_path / "other.json", {"a": 1}),  # JSON, but not a results file
        "samples": str(tmp_path / "samples.jsonl"),
        "missing": str(tmp_path / "nowhere" / "results.json"),
    }
    (tmp_path / "samples.jsonl").write_text('{"benchmark": "gsm8k"}\n{"benchmark": "gsm8k"}\n')
    out = tmp_path / "out"
    argv = [a.format(**paths) for a in argv]
    if "--compare" not in argv:
        argv += ["--output_dir", str(out)]
    code, lines = run_script(script, argv, capsys)
    assert_refused(code, lines, out, message)
