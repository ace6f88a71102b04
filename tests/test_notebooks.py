"""The six notebooks: their shape (badge, the one install cell README gives, the mode switch, markdown before code,
no logic of their own, committed outputs without local paths) and, slow, a top-to-bottom execution in SMOKE mode on
the CPU with the embedded defaults, each on its own: 05 given only a run folder, 06 only a Hub id (a stand-in Hub
folder), and 04 pushing its run there."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [
    "01_seed_pool.ipynb",
    "02_problem_generation.ipynb",
    "03_rewards.ipynb",
    "04_self_play_training.ipynb",
    "05_evaluate_and_push.ipynb",
    "06_explore_pool.ipynb",
]


def _read(name: str):
    return nbformat.read(ROOT / "notebooks" / name, as_version=4)


def test_the_six_notebooks_exist():
    assert sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_shape(name):
    book = _read(name)
    cells = book.cells
    assert "colab.research.google.com/assets/colab-badge.svg" in cells[0].source  # opens with the badge
    assert f"notebooks/{name}" in cells[0].source
    code = [c for c in cells if c.cell_type == "code"]
    assert "pip" in code[0].source and "install" in code[0].source  # the install cell comes first
    assert any("SMOKE =" in c.source and "describe_hardware" in c.source for c in code)  # hardware + switch
    for i, cell in enumerate(cells):  # markdown before each code cell
        if cell.cell_type == "code":
            assert i > 0 and cells[i - 1].cell_type == "markdown", f"{name}: code cell {i} has no markdown before it"
    for cell in code:  # logic lives in the package: no function or class is defined in a notebook
        source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
        tree = ast.parse(source)
        defined = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)]
        assert not defined, f"{name} defines {[n.name for n in defined]}"
    assert sum("from opensir_lite" in c.source for c in code) >= 3  # the steps come from the package


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_with_outputs(name):
    book = _read(name)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "run scripts/run_notebooks.py --inplace before committing"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors


def install_cell(name: str) -> str:
    return next(c for c in _read(name).cells if c.cell_type == "code").source


def test_one_install_cell_everywhere_and_in_readme():
    """The install cell is the same in every notebook and is README's, and its URL is pyproject's (the one place the
    repository's URL is written); the badges point at the same repository."""
    from opensir_lite.notebook import repo_url

    cell = install_cell(NOTEBOOKS[0])
    assert all(install_cell(n) == cell for n in NOTEBOOKS)
    assert f"```python\n{cell}\n```" in (ROOT / "README.md").read_text(encoding="utf-8")
    url = repo_url()
    assert f'REPO_URL = "{url}"' in cell
    for name in NOTEBOOKS:
        assert (
            "colab.research.google.com/github/" + url.removeprefix("https://github.com/") in _read(name).cells[0].source
        )


def test_the_install_cell_installs_every_pin_but_torch(tmp_path):
    """The pins it hands pip: requirements.txt's, comments and extras kept, torch left to the machine."""
    import re

    cell = install_cell(NOTEBOOKS[0])
    lines = [line for line in cell.splitlines() if line.lstrip().startswith("pins = ")]
    (tmp_path / "opensir_lite").mkdir()
    (tmp_path / "opensir_lite" / "requirements.txt").write_text((ROOT / "requirements.txt").read_text())
    scope = {"Path": lambda p: tmp_path / p}
    for line in lines:
        exec(line.strip(), scope)  # noqa: S102 - the cell's own two lines
    pins = scope["pins"]
    expected = [re.split(r"\s+#", line)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    expected = [p for p in expected if p and not p.startswith("#") and not p.startswith("torch==")]
    assert pins == expected and "transformers==5.17.0" in pins and not any(p.startswith("torch==") for p in pins)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs_show_no_local_paths(name):
    text = (ROOT / "notebooks" / name).read_text(encoding="utf-8")
    for path in {str(ROOT), "/root/", "/home/", "/tmp/"}:
        assert path not in text, f"{name} shows {path}"


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory, embedded_dir):
    """A one-step smoke run on the embedded SmolLM2, and the stand-in Hub folder it was pushed to as user/smoke."""
    from opensir_lite.hub import push_run

    tmp = tmp_path_factory.mktemp("nb")
    run = tmp / "run"
    proc = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", "smoke", "--output_dir", str(run), "--max_steps", "1",
         "--teacher_max_new_tokens", "32", "--student_max_new_tokens", "32", "--write_plots", "false"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    hub = tmp / "hub"
    os.environ["OPENSIR_LITE_HUB_DIR"] = str(hub)
    try:
        push_run(run, "user/smoke", with_pool=True)
    finally:
        del os.environ["OPENSIR_LITE_HUB_DIR"]
    return run, hub


# each notebook alone: 05 reads only a run folder, 06 only a Hub id, 04 pushes to the (stand-in) Hub
STANDALONE = {
    "05_evaluate_and_push.ipynb": "folder",
    "06_explore_pool.ipynb": "hub",
    "04_self_play_training.ipynb": "push",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, tmp_path, embedded_dir, request):
    env = dict(os.environ, OPENSIR_LITE_SMOKE="1", HF_HUB_OFFLINE="1")
    env.pop("OPENSIR_LITE_MODE", None)
    env.pop("OPENSIR_LITE_DATA", None)
    how = STANDALONE.get(name)
    if how in ("folder", "hub"):
        run, hub = request.getfixturevalue("pushed_run")
        env.update(OPENSIR_LITE_RUN=str(run) if how == "folder" else "user/smoke", OPENSIR_LITE_HUB_DIR=str(hub))
    if how == "push":
        env.update(OPENSIR_LITE_REPO_ID="user/nb04", OPENSIR_LITE_HUB_DIR=str(tmp_path / "hub"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_notebooks.py"), str(ROOT / "notebooks" / name),
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    executed = nbformat.read(tmp_path / name, as_version=4)
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    if how == "push":  # the run is on the (stand-in) Hub: adapter and card at the top, the run in run/
        repo = tmp_path / "hub" / "user" / "nb04"
        assert (repo / "adapter_model.safetensors").is_file() and (repo / "README.md").is_file()
        assert (repo / "run" / "pool.jsonl").is_file() and (repo / "run" / "metrics.jsonl").is_file()
