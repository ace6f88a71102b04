"""Parser tables: teacher outputs, boxed answers, answer equivalence, final-answer line, concepts span."""

import pytest

from opensir_lite.parsing import (
    answers_equal,
    extract_answer,
    extract_boxed_answer,
    extract_program,
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
    (
        f"<problem><problem>{P}</problem></problem><concepts>{C}</concepts>",
        None,
        ["subtraction", "word problems"],
    ),  # nested tags: official, the problem is "<problem>P" (first opening to first closing)
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


def test_think_block():
    assert has_think_block("<think>plan</think><problem>x</problem>")  # present
    assert not has_think_block("<think>never closed")  # unclosed


EXTRACTION_CASES = [
    # (completion, answer under latex (official training), latex_expr (official evaluation), boxed (strict))
    ("Therefore, the final answer is: $\\boxed{7}$", "7", "7", "7"),  # the requested line: every reading
    ("So the final answer is: $12$", "12", "12", None),  # anchored LaTeX without a box: not strict
    ("The answer is 18.", None, "18", None),  # prose number: only the evaluation reading
    ("We get 3 + 4 = 7 apples. The answer is 654.", None, "654", None),  # the answer, not the first number
    ("first \\boxed{1} then \\boxed{2}", "1,2", "1,2", "2"),  # math-verify reads several boxes as one set
    ("\\boxed{\\frac{}{}}", "\\frac{}{}", "\\frac{}{}", None),  # official: math-verify's unparsed string is a vote
    ("Therefore, the final answer is: $\\boxed{x}$", "x", "x", "x"),  # official: a letter is a variable
    ("\\boxed{\\pi}", "\\pi", "\\pi", "\\pi"),  # official: pi
    ("no answer at all", None, None, None),  # nothing to read
    ("Therefore, the final answer is: $\\boxed{ANSWER}$", "ANSWER", "ANSWER", "ANSWER"),  # A*N*S*W*E*R: "maths"
]


@pytest.mark.parametrize("text,latex,latex_expr,boxed", EXTRACTION_CASES)
def test_extract_answer_modes(text, latex, latex_expr, boxed):
    assert extract_answer(text, "latex") == latex
    assert extract_answer(text, "latex_expr") == latex_expr
    assert extract_answer(text, "boxed") == boxed
    assert extract_answer(text) == latex  # the default is the official training reading


def test_unknown_extraction_mode_is_an_error():
    with pytest.raises(ValueError, match="answer extraction"):
        extract_answer("\\boxed{1}", "regex")


@pytest.mark.parametrize(
    "answer,key",
    [
        ("0.5", "1/2"),  # math-verify 0.9 already writes decimals as fractions: the official vote merges these
        ("\\frac{1}{2}", "1/2"),  # ... with this
        ("3.0", "3.00000000000000"),  # but a float stays a float ...
        ("3", "3"),  # ... so the official vote splits 3.0 and 3
        ("(x+1)^2", "(x + 1)**2"),  # and an expanded polynomial is another string
        ("x^2+2x+1", "x**2 + 2*x + 1"),
        (None, None),  # no answer
    ],
)
def test_answer_key(answer, key):
    from opensir_lite.parsing import answer_key

    assert answer_key(answer) == key


@pytest.mark.parametrize(
    "a,b,string,equivalence",
    [
        ("0.5", "\\frac{1}{2}", True, True),  # both rules merge these
        ("3.0", "3", False, True),  # a real split of the official string rule
        ("(x+1)^2", "x^2+2x+1", False, True),  # another
        ("2", "3", False, False),  # different answers under both
    ],
)
def test_answers_equal_by_rule(a, b, string, equivalence):
    assert answers_equal(a, b, vote="string") is string
    assert answers_equal(a, b, vote="equivalence") is equivalence


@pytest.mark.parametrize(
    "s,expected",
    [
        ("42", True),  # integer
        ("-3.5", True),  # decimal
        (".25", True),  # leading dot
        ("12,500.00", True),  # thousands separator
        ("15, 21, 27", True),  # list
        ("4:5", True),  # ratio
        ("25\\%", True),  # percentage
        ("5!", True),  # factorial
        ("\\$18.90", True),  # escaped currency
        ("£500", True),  # currency
        ("3/4", True),  # fraction
        ("2*sqrt(2)", True),  # operators
        ("\\pi", True),  # LaTeX command
        ("x", True),  # a one-letter variable (official)
        ("ab", True),  # two letters (official)
        ("pi", True),  # the key of \\pi
        ("2a", True),  # a number and a variable
        ("135^2", True),  # a power
        ("1.23e-4", True),  # scientific notation
        ("12 apples", True),  # digits with letters (official)
        ("a1b", True),  # a short alphanumeric
        ("apples", False),  # a word
        ("ANSWER", False),  # an all-caps label
        ("the number of apples", False),  # descriptive text
        ("", False),  # empty
        ("\\text{apples}", False),  # text
        ("\\boxed{ANSWER}", False),  # the prompt's placeholder
    ],
)
def test_is_math_expression(s, expected):
    from opensir_lite.parsing import is_math_expression

    assert is_math_expression(s) is expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("What is <problem>2+2</problem>?", True),  # tags in the problem
        ("<think>Let me solve this</think>Find x", True),  # leaked think block
        ("If x < 5 and y > 3, what is x + y?", False),  # inequalities are no tags
        ("Compute <b>5</b> plus 2", False),  # one-letter names are not counted (as the official filter)
        (None, False),  # nothing
    ],
)
def test_contains_xml_tags(text, expected):
    from opensir_lite.parsing import contains_xml_tags

    assert contains_xml_tags(text) is expected


@pytest.mark.parametrize(
    "answer,problem,expected",
    [
        ("12", "There are 12 apples; how many are left after eating 3?", True),  # states its answer
        ("2", "There are 12 apples; how many are left after eating 3?", False),  # whole words only
        ("1/2", "What is half, written as 1/2, of 8?", True),  # escaped characters
        (None, "anything", False),  # no answer
    ],
)
def test_answer_in_problem(answer, problem, expected):
    from opensir_lite.parsing import answer_in_problem

    assert answer_in_problem(answer, problem) is expected


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


@pytest.mark.parametrize(
    "text, expected",
    [
        ("```python\nprint(1)\n```", "print(1)\n"),  # the fence the prompt asks for
        ("Sure.\n```\nx = 2\nprint(x)\n```\nDone.", "x = 2\nprint(x)\n"),  # a bare fence
        ("```py\nprint(1)\n```\nor\n```python\nprint(2)\n```", "print(2)\n"),  # the last block wins
        ("```python\nprint(1)", None),  # unclosed (a truncated completion): not run
        ("```python\n   \n```", None),  # empty
        ("print(1)", None),  # no block at all
        (None, None),  # garbage input
        ("```python\n" + "x = 1\n" * 2000 + "```", None),  # too long to be an answer computation
    ],
)
def test_extract_program(text, expected):
    assert extract_program(text) == expected
