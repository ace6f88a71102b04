"""The interactive pool explorer: rows with round evidence, filters, the detail view, and the self-contained HTML
page in a real headless Chromium (console errors, points on the map, filtering by concept)."""

import json
import os
import shutil

import numpy as np
import pytest

from opensir_lite.checkpointing import EVIDENCE_FILE
from opensir_lite.exploration import (
    EVIDENCE_MISSING,
    explorer_map,
    explorer_rows,
    filter_rows,
    load_evidence,
    load_program_checks,
    problem_detail,
    write_explorer_html,
)
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.programs import PROGRAM_CHECKS_FILE, ProgramCheck, write_checks

CONCEPTS = ["addition of numbers", "multiplication facts", "fractions of a whole", "geometry of circles"]


def make_run(folder, n=40, evidence=True, seed=0):
    """A run folder with ``n`` generated problems (every fifth illegal), embeddings and, optionally, evidence."""
    rng = np.random.default_rng(seed)
    pool = ProblemPool.from_seed()
    records, vectors, rows = [], {}, []
    for i in range(1, n + 1):
        legal = i % 5 != 0
        concepts = [CONCEPTS[i % 4]] + ([CONCEPTS[(i + 1) % 4]] if i % 3 == 0 else [])
        r = ProblemRecord(
            id=i, problem=f"Problem {i}: how many apples are left after eating {i}?" if legal else "",
            step=1 + i // 10, concepts=concepts if legal else [], legal=legal, reason=None if legal else "no_problem",
            in_pool=legal, reference_id=0, solve_rate=(i % 8) / 8 if legal else None,
            majority_answer=str(i) if legal else None, n_valid_answers=8 if legal else 0,
            novelty=0.1 + 0.01 * i if legal else None, rewards={"solvability": 0.5, "diversity": 0.2},
            teacher_output=None if legal else "<think>no tags here",
        )  # fmt: skip
        records.append(r)
        if legal:
            vectors[i] = rng.normal(size=8).astype(np.float32)
            rows.append({"id": i, "step": r.step, "reference_id": 0, "teacher_output": f"<problem>{r.problem}</problem>",
                         "students": [{"answer": str(i), "class": 0, "tokens": 30, "completion": f"so {i}"}] * 5
                         + [{"answer": "7", "class": 1, "tokens": 20, "completion": "so 7"}] * 2
                         + [{"answer": None, "class": None, "tokens": 40, "completion": "hmm"}],
                         "majority_class": 0, "majority_answer": str(i), "solve_rate": 5 / 7, "novelty": r.novelty,
                         "rewards": r.rewards, "combined_score": 1.0})  # fmt: skip
    pool.add(records, vectors)
    pool.save(folder)
    if evidence:
        text = "".join(json.dumps(row) + "\n" for row in rows) + '{"id": 999, "step": 9, "students": ['  # a cut line
        (folder / EVIDENCE_FILE).write_text(text)
    return pool


def test_rows_filters_and_detail(tmp_path):
    pool = make_run(tmp_path)
    evidence = load_evidence(tmp_path)
    assert len(evidence) == 32  # the line cut by a crash is skipped
    rows = explorer_rows(pool, evidence)
    assert len(rows) == 41 and sum(r["x"] is not None for r in rows) == len(pool) - 1  # the seed has no embedding
    assert rows[1]["reference"] == "What is 1+1?"
    cases = [
        # (filter arguments, expected row ids)
        ({"legal": "illegal"}, [r["id"] for r in rows if not r["legal"]]),  # illegal only
        ({"concept": CONCEPTS[1]}, [r["id"] for r in rows if CONCEPTS[1] in r["concepts"]]),  # one concept
        ({"steps": (2, 2)}, [r["id"] for r in rows if r["step"] == 2]),  # a step range
        ({"solve_rate": (0.5, 0.9)}, [r["id"] for r in rows if r["solve_rate"] is not None and 0.5 <= r["solve_rate"] <= 0.9]),
        ({"search": "EATING 17"}, [17]),  # case-insensitive text search
        ({"reason": "no_problem"}, [r["id"] for r in rows if r["reason"] == "no_problem"]),  # an illegal reason
    ]  # fmt: skip
    for kwargs, expected in cases:
        assert [r["id"] for r in filter_rows(rows, **kwargs)] == expected, kwargs
    detail = problem_detail(rows[1])
    assert "class 0 (majority): 5 x '1'" in detail and "no valid answer: 1" in detail and "Reference problem" in detail
    assert "no tags here" in problem_detail(rows[5])  # an illegal one shows its teacher output
    fig = explorer_map(rows, "concept")
    assert sum(len(t.x) for t in fig.data) == len(pool) - 1


def write_program_checks(folder, pool):
    """program_checks.jsonl for the legal problems: every third disagrees, every seventh failed."""
    checks = []
    for r in pool.history:
        if r.legal and r.majority_answer is not None:
            failed, disagree = r.id % 7 == 0, r.id % 3 == 0
            checks.append(ProgramCheck(r.id, r.problem, r.majority_answer,
                                       None if failed else ("999" if disagree else r.majority_answer),
                                       None if failed else not disagree, failure="timeout" if failed else None,
                                       program=None if failed else "print(999)\n"))  # fmt: skip
    write_checks(folder / PROGRAM_CHECKS_FILE, checks)
    return checks


def test_program_column_and_filter(tmp_path):
    """Rows carry the program check of program_checks.jsonl; the filter keeps each status; the detail shows it."""
    pool = make_run(tmp_path)
    checks = write_program_checks(tmp_path, pool)
    rows = explorer_rows(pool, load_evidence(tmp_path), programs=load_program_checks(tmp_path))
    cases = [
        # (filter, expected ids)
        ("disagrees", [c.id for c in checks if c.agrees is False]),  # program disagrees with the majority
        ("agrees", [c.id for c in checks if c.agrees]),  # agrees
        ("failed", [c.id for c in checks if c.failure]),  # checked, no answer
        ("checked", [c.id for c in checks]),  # every checked problem
        ("unchecked", [r["id"] for r in rows if r["id"] not in {c.id for c in checks}]),  # the rest (illegal, seed)
    ]
    for program, expected in cases:
        assert [r["id"] for r in filter_rows(rows, program=program)] == expected, program
    assert "**disagrees** with the majority" in problem_detail(next(r for r in rows if r["id"] == 3))
    assert "failed (timeout)" in problem_detail(next(r for r in rows if r["id"] == 7))
    with pytest.raises(ValueError, match="program filter"):
        filter_rows(rows, program="maybe")


def test_older_runs_without_evidence_still_open(tmp_path):
    pool = make_run(tmp_path, evidence=False)
    assert load_evidence(tmp_path) is None
    rows = explorer_rows(pool, None)
    assert EVIDENCE_MISSING in problem_detail(rows[1])
    page = write_explorer_html(tmp_path)
    assert page.is_file() and "no round evidence" in page.read_text()


def chrome():
    """A headless Debian Chromium through Selenium (CI installs chromium and chromium-driver)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (.ci/run)")
        pytest.skip("no chromium here (apt-get install chromium chromium-driver)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-unsafe-swiftshader", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


@pytest.mark.slow
def test_explorer_page_in_headless_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    pool = make_run(tmp_path / "run", n=250)
    checks = write_program_checks(tmp_path / "run", pool)
    page = write_explorer_html(tmp_path / "run")
    browser = chrome()
    try:
        browser.get(page.as_uri())
        WebDriverWait(browser, 60).until(lambda b: b.execute_script("return !!(window.explorer && window.Plotly)"))
        points = browser.execute_script(
            "return document.getElementById('map').data.reduce((n, t) => n + t.x.length, 0)"
        )
        assert points == len(pool) - 1  # every pool problem with an embedding (all but the seed)
        concept = CONCEPTS[2]
        Select(browser.find_element(By.ID, "concept")).select_by_value(concept)
        shown = browser.execute_script("return window.explorer.shown.map((r) => r.concepts)")
        assert shown and all(concept in c for c in shown)
        assert len(shown) == sum(concept in r.concepts for r in pool.history)
        cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#table tbody td.concepts")]
        assert cells and all(concept in text for text in cells)
        browser.find_element(By.CSS_SELECTOR, "#table tbody tr.row").click()
        assert "Student answers by vote class" in browser.find_element(By.ID, "detail").text
        Select(browser.find_element(By.ID, "concept")).select_by_value("")
        Select(browser.find_element(By.ID, "program")).select_by_value("disagrees")
        shown = browser.execute_script("return window.explorer.shown.map((r) => r.id)")
        assert shown == [c.id for c in checks if c.agrees is False]
        cells = browser.find_elements(By.CSS_SELECTOR, "#table tbody td.program-disagrees")
        assert cells and all(td.text.startswith("≠ 999") for td in cells)
        browser.find_element(By.CSS_SELECTOR, "#table tbody tr.row").click()
        assert "disagrees with the majority" in browser.find_element(By.ID, "program-check").text
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        browser.quit()
