"""The repository as a user meets it: documents that read as documentation (no internal bookkeeping words, length
limits, links that resolve) and a clone that stays light (no new tracked file over 5 MB)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Words about how the project is organised internally, which a user cannot act on. (pattern, what it catches)
BOOKKEEPING = [
    (re.compile(r"\bissues? ?#?\d+", re.IGNORECASE), "an issue number"),
    (re.compile(r"\bissue\d+", re.IGNORECASE), "an issue number in a path"),
    (re.compile(r"\bstops? \d+\b", re.IGNORECASE), "a work-session label"),
    (re.compile(r"\bTODO\b|\bFIXME\b"), "a to-do marker"),
    (re.compile(r"\bto-do\b", re.IGNORECASE), "a to-do list"),
    (re.compile(r"~~"), "struck-through text (a done to-do)"),
]
THIS_FILE = Path(__file__).resolve()


def user_facing_files() -> list[Path]:
    """README, docs, every results README, the notebooks, and the code, recipes and build files."""
    globs = ["README.md", "docs/**/*.md", "results/**/README.md", "notebooks/*.ipynb", "opensir_lite/**/*.py",
             "opensir_lite/**/*.yaml", "opensir_lite/**/*.md", "scripts/*.py", "benchmarks/*.py", "tests/*.py",
             "Makefile", ".ci/run", "requirements*.txt", "pyproject.toml"]  # fmt: skip
    files = {p.resolve() for g in globs for p in ROOT.glob(g) if p.is_file()}
    return sorted(files - {THIS_FILE})


def bookkeeping_hits(text: str) -> list[str]:
    return [f"{what}: {m.group(0)!r}" for pattern, what in BOOKKEEPING for m in pattern.finditer(text)]


@pytest.mark.parametrize(
    "text, flagged",
    [
        ("as issue 29 asked", True),  # an issue number
        ("see results/qwen0.5b/issue29/seed42", True),  # a path named after one
        ("measured in stop 40", True),  # a session label
        ("1. ~~seed 42~~ done", True),  # a struck-through list
        ("# TODO: later", True),  # a marker
        ("the sandbox stops 3 attacks", True),  # the pattern is strict: rephrase such a sentence
        ("todo = [row for row in rows]; a known issue; the stop rule; step 40", False),  # ordinary words pass
    ],
)
def test_bookkeeping_patterns(text, flagged):
    assert bool(bookkeeping_hits(text)) is flagged


def written_text(path: Path) -> str:
    """What the project wrote in a file: a notebook's cell sources (its outputs are the run's data: dataset
    questions such as "at the first stop 47 people get off" and model text), any other file whole."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8", errors="replace")
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"])


def test_no_bookkeeping_words_in_anything_a_user_reads():
    found = []
    for path in user_facing_files():
        for lineno, line in enumerate(written_text(path).splitlines(), start=1):
            found += [f"{path.relative_to(ROOT)}:{lineno}: {hit}" for hit in bookkeeping_hits(line)]
    assert not found, "\n".join(found[:40])


# (document, most lines): the user's door and the two reports stay short
LENGTH_LIMITS = [("README.md", 250), ("docs/learning.md", 300), ("docs/benchmarks.md", 300)]


@pytest.mark.parametrize("name, limit", LENGTH_LIMITS)
def test_document_length(name, limit):
    lines = (ROOT / name).read_text(encoding="utf-8").count("\n")
    assert lines <= limit, f"{name} has {lines} lines (limit {limit}): move detail next to its evidence in results/"


LINK = re.compile(r"\]\(([^)\s]*)\)")  # [text](target) and ![alt](target)
SECTION = re.compile(r"\]\(([^)#\s]+\.(?:md|ipynb))\), \"([^\"]+)\"")  # [file](path), "Section"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but hyphens and underscores dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        import nbformat

        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    else:
        text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6} +(.+)$", text, re.MULTILINE)]


def documents() -> list[tuple[Path, str]]:
    """(path, Markdown text) of README, docs, every Markdown file under results/ and the notebooks' markdown cells."""
    import nbformat

    out = [(p, p.read_text(encoding="utf-8")) for p in
           [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("results/**/*.md")]]  # fmt: skip
    for book in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(book, as_version=4).cells
        out.append((book, "\n".join(c.source for c in cells if c.cell_type == "markdown")))
    return out


def test_links_images_and_sections_resolve():
    """Every relative link and image in README, docs/, results/ and the notebooks' markdown points to a file that
    exists; every #anchor names a heading of its target; every section quoted after a link ([file](path), "Section")
    is a heading there."""
    broken = []
    for doc, text in documents():
        text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
        for target in LINK.findall(text):
            if not target or re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = doc.parent / path if path else doc
            if not resolved.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
            elif anchor and resolved.is_file() and resolved.suffix in (".md", ".ipynb"):
                if anchor not in {slug(h) for h in headings(resolved)}:
                    broken.append(f"{doc.relative_to(ROOT)} -> {target} (no such heading)")
        for path, section in SECTION.findall(text):
            resolved = doc.parent / path
            if resolved.is_file() and not any(section.lower() in h.lower() for h in headings(resolved)):
                broken.append(f'{doc.relative_to(ROOT)} -> {path}, "{section}" (no such section)')
    assert not broken, "\n".join(broken)


def test_slug():
    assert slug("Testing the claim on a GPU") == "testing-the-claim-on-a-gpu"
    assert slug("vLLM on the CPU (`generation_backend: vllm_lora`)") == "vllm-on-the-cpu-generation_backend-vllm_lora"


MAX_TRACKED_BYTES = 5 * 2**20
# Adapter weights committed before the limit, kept because a figure in the docs reads them
LARGE_FILES_BEFORE_THE_LIMIT = {
    "results/qwen0.5b/adapters/gold/adapter_model.safetensors",
    "results/qwen0.5b/adapters/seed42/adapter_model.safetensors",
    "results/qwen0.5b/adapters/seed7/adapter_model.safetensors",
    "results/qwen0.5b/six-step/seed42/adapter-checkpoint-5/adapter_model.safetensors",
}


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in out.stdout.decode().split("\0") if name]


def test_no_new_tracked_file_over_5_mb():
    """New weights and large outputs stay out of git: a run's README records their sha256, size, config and the
    command that makes them, and scripts/push_to_hub.py is where weights go."""
    large = {
        name for name in tracked_files() if (ROOT / name).is_file() and (ROOT / name).stat().st_size > MAX_TRACKED_BYTES
    }
    assert large <= LARGE_FILES_BEFORE_THE_LIMIT, (
        f"tracked files over 5 MB: {sorted(large - LARGE_FILES_BEFORE_THE_LIMIT)}"
    )
