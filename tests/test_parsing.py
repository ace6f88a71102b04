"""Parser tables: teacher outputs, boxed answers, answer equivalence, final-answer line, concepts span."""

import pytest

from opensir_lite.parsing import (
    answers_equal,
    extract_answer,
    extract_boxed_answer,
    find_concepts_span,
    has_final_answer_line,
    has_think_block,
    parse_teacher_output,
)

P = "How many apples are left if you eat 3 of 10?"  # a legal problem (>= 10 characters)
C = "subtraction, word problems"

TEACHER_CASES = [
    # (text, expected reason or None, expected concepts)
    (
        f"<think>x</think><problem>{P}</problem><concepts>{C}</concepts>",
        None,
        ["subtraction", "word problems"],
    ),  # well-formed
    (
        f"<problem>{P}</problem><concepts>{C}</concepts>",
        None,
        ["subtraction", "word problems"],
    ),  # no think: legal (format reward says 0)
    (
        f"<PROBLEM> {P} </PROBLEM>\n<Concepts>{C}</Concepts>",
        None,
        ["subtraction", "word problems"],
    ),  # tags case-insensitive, spaces stripped
    (f"<concepts>{C}</concepts>", "no_problem", []),  # missing problem tag
    (f"<problem>{P}", "no_problem", []),  # unclosed problem tag
    ("", "no_problem", []),  # empty output
    (f"<problem>   </problem><concepts>{C}</concepts>", "empty_problem", []),  # empty problem
    (f"<problem>...</problem><concepts>{C}</concepts>", "ellipsis_problem", []),  # "..." placeholder
    (f"<problem>1+1=?</problem><concepts>{C}</concepts>", "short_problem", []),  # under 10 characters
    (f"<problem>{P}</problem>", "no_concepts", []),  # missing concepts
    (f"<problem>{P}</problem><concepts> </concepts>", "empty_concepts", []),  # empty concepts
    (
        f"<problem>{P}</problem><concepts>algebra one, geometry two, calculus three, topology four</concepts>",
        "too_many_concepts",
        [],
    ),  # 4 concepts
    (
        f"<problem>{P}</problem><concepts>subtraction,\nword problems</concepts>",
        "multiline_concepts",
        [],
    ),  # newline in concepts
    (f"<problem>{P}</problem><concepts>math, sums</concepts>", "short_concepts", []),  # every concept < 10 chars
    (f"<problem>{P}</problem><concepts>math, subtraction</concepts>", None, ["subtraction"]),  # short ones dropped
    (f"<problem><problem>{P}</problem></problem><concepts>{C}</concepts>", "nested_tags", []),  # nested problem tags
    (
        f"<problem>{P}</problem><problem>Another problem text here</problem><concepts>{C}</concepts>",
        None,
        ["subtraction", "word problems"],
    ),  # duplicate: first counts
    (
        b"<problem>" + P.encode() + b"\xff</problem><concepts>subtraction</concepts>",
        None,
        ["subtraction"],
    ),  # invalid UTF-8 bytes
    (None, "no_problem", []),  # not text at all
]


@pytest.mark.parametrize("text,reason,concepts", TEACHER_CASES)
def test_parse_teacher_output(text, reason, concepts):
    parsed = parse_teacher_output(text)
    assert parsed.reason == reason
    assert parsed.concepts == concepts
    assert parsed.ok == (reason is None)
    if reason is None:
        assert P in parsed.problem


BOXED_CASES = [
    ("Therefore, the final answer is: $\\boxed{42}$", "42"),  # plain
    ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),  # fraction with nested braces
    ("\\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),  # deeper nesting
    ("first \\boxed{1} then \\boxed{2}", "2"),  # last box wins
    ("\\boxed {7}", "7"),  # space before brace
    ("\\boxed{}", None),  # empty box
    ("\\boxed{12", None),  # unclosed
    ("no box here: 12", None),  # no box
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces inside
    ("\\boxed{a} \\boxed{", "a"),  # broken last box falls back to the previous one
]


@pytest.mark.parametrize("text,expected", BOXED_CASES)
def test_extract_boxed_answer(text, expected):
    assert extract_boxed_answer(text) == expected


EQUIVALENCE_CASES = [
    ("\\frac{1}{2}", "0.5", True),  # fraction vs decimal
    ("\\dfrac{3}{4}", "\\frac{3}{4}", True),  # \dfrac
    ("1,000", "1000", True),  # thousands separator
    ("-3", "-3.0", True),  # negative numbers
    ("5\\text{ cm}", "5", True),  # units
    ("[1,2)", "[1, 2)", True),  # interval
    ("1, 2", "2, 1", True),  # multiple answers as a set
    ("2", "3", False),  # different numbers
    ("x^2+1", "1+x^2", True),  # expressions
    ("11", None, False),  # no answer
    (None, None, False),  # no answers at all
]


@pytest.mark.parametrize("a,b,expected", EQUIVALENCE_CASES)
def test_answers_equal(a, b, expected):
    assert answers_equal(a, b) is expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("... Therefore, the final answer is: $\\boxed{12}$", True),  # exact line
        ("Therefore, the final answer is: \\boxed{12}", False),  # missing dollars
        ("The answer is $\\boxed{12}$", False),  # different words
    ],
)
def test_final_answer_line(text, expected):
    assert has_final_answer_line(text) is expected


def test_think_block_and_answer_extraction():
    assert has_think_block("<think>plan</think><problem>x</problem>")  # present
    assert not has_think_block("<think>never closed")  # unclosed
    assert extract_answer("Therefore, the final answer is: $\\boxed{7}$") == "7"  # valid maths
    assert extract_answer("\\boxed{\\frac{}{}}") is None  # not parseable maths


@pytest.mark.parametrize(
    "text,span",
    [
        ("<problem>p</problem><concepts>a, b</concepts>", (20, 45)),  # tags included
        ("<concepts>a, b", None),  # no closing tag: nothing masked
        ("no tags", None),  # no tags
    ],
)
def test_find_concepts_span(text, span):
    assert find_concepts_span(text) == span


@pytest.mark.parametrize(
    "answer,gold,expected",
    [
        ("10-4n", "10-4 n", True),  # College Math style LaTeX gold
        ("\\frac{3}{2}", "\\dfrac{3}{2}", True),  # \dfrac gold
        ("2400", "2400", True),  # GSM8K
        ("7", "np.arcsin(10/13)", False),  # unparseable gold falls back to text, still comparable
        ("np.arcsin(10/13)", "np.arcsin(10/13)", True),  # the same text matches
        (None, "7", False),  # no answer
    ],
)
def test_gold_matches(answer, gold, expected):
    from opensir_lite.parsing import gold_matches

    assert gold_matches(answer, gold) is expected
