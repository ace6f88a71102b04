"""Every command quoted in README and docs/ names a script that exists and flags that script accepts.

The commands are collected from the Markdown (``python scripts/X.py ...`` or ``python benchmarks/X.py ...``, with
backslash continuations), and each script's own ``--help`` (run in this process with ``runpy``, so that torch and
transformers are imported once) is the authority on its flags. Scripts that hand ``--field value`` overrides on to
a recipe also accept every flag of ``scripts/train.py``.
"""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted(ROOT.glob("*/README.md")),
    *sorted(ROOT.glob("results/**/README.md")),
]
COMMAND = re.compile(r"python3? ((?:scripts|benchmarks)/\w+\.py)((?:\\\n|[^\n`])*)")
FLAG = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)")
# scripts that pass unknown --field value pairs on to a recipe (their help says so); they accept train.py's flags
FORWARDS_RECIPE_FIELDS = {"benchmarks/step.py", "benchmarks/overhead.py", "benchmarks/two_processes.py"}


def quoted_commands(docs: list[Path] = DOCS) -> dict[str, set[str]]:
    """Script path -> the flags quoted with it anywhere in ``docs``."""
    found: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        for match in COMMAND.finditer(doc.read_text()):
            found[match.group(1)].update(FLAG.findall(match.group(2).replace("\\\n", " ")))
    return found


def help_text(script: str) -> str:
    """``python <script> --help`` as printed, run in this process."""
    out, argv = io.StringIO(), sys.argv
    sys.argv = [str(ROOT / script), "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            with pytest.raises(SystemExit):
                runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        sys.argv = argv
    return out.getvalue()


def test_collector_reads_continuations_and_inline_commands(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash\npython scripts/train.py --config smoke \\\n    --max_steps 2\n```\n"  # a continued command
        "Inline: `python benchmarks/step.py --recipe smoke` then `--not_this` outside it.\n"  # the span ends it
        "python3 scripts/evaluate.py --n 4 --temperature 0.7\n"  # python3 and one-letter flags
    )
    assert quoted_commands([doc]) == {
        "scripts/train.py": {"config", "max_steps"},
        "benchmarks/step.py": {"recipe"},
        "scripts/evaluate.py": {"n", "temperature"},
    }


def test_docs_quote_commands():
    # the collector finds the user's jobs and the measurement tools in today's docs (a broken regex would find none)
    found = quoted_commands()
    assert {"scripts/train.py", "scripts/evaluate.py", "benchmarks/step.py"} <= set(found)


@pytest.mark.slow
def test_every_quoted_script_and_flag_exists():
    found = quoted_commands()
    train_help = help_text("scripts/train.py")
    missing = []
    for script, flags in sorted(found.items()):
        if not (ROOT / script).is_file():
            missing.append(f"{script} (no such script)")
            continue
        text = help_text(script) + (train_help if script in FORWARDS_RECIPE_FIELDS else "")
        missing += [f"{script} --{flag}" for flag in sorted(flags) if not re.search(rf"--{flag}\b", text)]
    assert not missing, "commands quoted in the docs that do not run: " + ", ".join(missing)


def test_measurement_tools_share_the_json_convention():
    # every tool under benchmarks/ prints a table and writes it with --json (read from the source: no import);
    # benchlib.py is their shared helpers, no tool
    tools = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "benchlib.py")
    assert len(tools) >= 9
    lacking = [p.name for p in tools if '"--json"' not in p.read_text() and "json: str | None" not in p.read_text()]
    assert not lacking, f"benchmarks without --json: {lacking}"
    # and scripts/ holds only user jobs now
    assert not list((ROOT / "scripts").glob("benchmark_*.py"))
