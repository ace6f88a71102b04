"""Model text is untrusted input: the teacher parser, answer extraction, equivalence and majority vote never raise,
never run code, and return within their limits on random, adversarial and megabyte-long strings."""

import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from opensir_lite.grading import majority_vote
from opensir_lite.parsing import (
    PARSE_TIMEOUT_S,
    VERIFY_TIMEOUT_S,
    answer_key,
    answers_equal,
    extract_answer,
    extract_boxed_answer,
    gold_matches,
    has_final_answer_line,
    has_think_block,
    is_math_expression,
    normalise_answer,
    parse_teacher_output,
)

# One call's limit: math-verify's parse and verify time limits, with slack for a loaded 2-core CI machine.
CALL_LIMIT_S = 4 * (PARSE_TIMEOUT_S + VERIFY_TIMEOUT_S)

FRAGMENTS = [
    "\\boxed{", "}", "{", "<problem>", "</problem>", "<concepts>", "</concepts>", "<think>", "</think>",
    "10^{10^{10}}", "9^{9^{9^9}}", "10^10^10", "(10^{100000})!", "\\frac{", "\\sqrt{", "^", "!", ",", "\n",
    "Therefore, the final answer is: $\\boxed{", "}$", "\\left(", "\\right]", "1", "-", ".", "\\dfrac", "\\infty",
    "\\begin{matrix}", "x", "=", "\\", "$", "\ud800", "\x00", "1,000,000", "\\text{", "__import__('os')", "%",
    "\\int_0^\\infty", "\\sum_{n=1}^{10^{10}}", "e^{i\\pi}", "\\log(0)", "0/0", "\\frac{1}{0}",
]  # fmt: skip

hostile_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    st.binary(max_size=300),  # invalid UTF-8 arrives as bytes
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", errors="surrogateescape")),  # lone surrogates
)
FUZZ = settings(max_examples=60, deadline=timedelta(seconds=CALL_LIMIT_S), suppress_health_check=[HealthCheck.too_slow])


def timed(func, *args):
    start = time.perf_counter()
    result = func(*args)
    assert time.perf_counter() - start < CALL_LIMIT_S, f"{func.__name__} exceeded its limit"
    return result


@FUZZ
@given(hostile_text)
def test_teacher_parser_and_format_checks(text):
    parse = timed(parse_teacher_output, text)
    assert parse.ok == (parse.problem is not None)
    assert isinstance(timed(has_think_block, text), bool)
    assert isinstance(timed(has_final_answer_line, text), bool)


@FUZZ
@given(hostile_text)
@example("\\boxed{{}")  # an unparseable boxed match: its raw text is the official key (found by CI's fuzzing)
def test_answer_extraction(text):
    boxed = timed(extract_boxed_answer, text)
    assert boxed is None or isinstance(boxed, str)
    # the official reading keeps an answer whose vote key (str of math-verify's element, the raw match when it
    # could not parse it, as for "\\boxed{{}") looks like maths; the strict boxed reading keeps parseable ones
    answer = timed(extract_answer, text)
    assert answer is None or is_math_expression(answer_key(answer))
    strict = timed(extract_answer, text, "boxed")
    assert strict is None or normalise_answer(strict) is not None


@FUZZ
@given(hostile_text.filter(lambda t: isinstance(t, str)), hostile_text.filter(lambda t: isinstance(t, str)))
def test_equivalence(a, b):
    assert isinstance(timed(answers_equal, a, b), bool)
    assert isinstance(timed(gold_matches, a, b), bool)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=4))
def test_majority_vote(answers):
    start = time.perf_counter()
    vote = majority_vote(answers)
    pairs = max(1, len(answers) ** 2)
    assert time.perf_counter() - start < CALL_LIMIT_S * pairs
    assert 0 <= vote.count <= vote.n_valid <= len(answers)


MEGABYTE = 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * (MEGABYTE // 7),  # a million unclosed boxes
        "{" * MEGABYTE + "}",  # deep nesting
        "<problem>" * (MEGABYTE // 9),  # openers without closers
        "<problem>" + " " * MEGABYTE + "x",  # whitespace runs
        "Therefore, the final answer is: $\\boxed{" * (MEGABYTE // 42),  # the final line, over and over
        "<think>" + "a" * MEGABYTE + "</think><problem>" + "b" * MEGABYTE + "</problem><concepts>x</concepts>",
        "\\boxed{" + "1" * MEGABYTE + "}",  # a megabyte-long number
    ],
    ids=["boxes", "braces", "problem-openers", "whitespace", "final-lines", "huge-tags", "huge-number"],
)
def test_megabyte_outputs(text):
    for func in (parse_teacher_output, has_think_block, has_final_answer_line, extract_boxed_answer, extract_answer):
        timed(func, text)


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('touch {marker}')",  # a plain Python expression
        "\\text{__import__('os').system('touch {marker}')}",  # inside LaTeX text
        "$__import__('os').system('touch {marker}')$",  # inline maths
        "(lambda: open('{marker}', 'w').write('x'))()",  # a lambda that writes the file
        "exec(\"open('{marker}','w')\")",  # exec in the string
        "eval('open(\\'{marker}\\',\\'w\\')')",  # eval in the string
    ],
)
def test_answers_never_run_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    text = payload.replace("{marker}", str(marker))
    completion = f"Therefore, the final answer is: $\\boxed{{{text}}}$"
    extract_answer(completion)
    normalise_answer(text)
    answers_equal(text, text + "1")
    gold_matches(text, text)  # gold answers are parsed with expressions too
    gold_matches("1", text)
    majority_vote([text, text, "1"])
    assert not marker.exists(), "a model answer ran code"
