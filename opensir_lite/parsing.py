"""Parsing of model text: teacher outputs into (problem, concepts), student outputs into answers.

Every step is extract -> normalise -> compare, each a pure function that returns None (or an explanatory reason)
instead of raising, because model text is untrusted input. Nothing here evaluates code: answers are parsed by
math-verify's LaTeX grammar into sympy objects under a time limit, and a program is only cut out of its text
(:func:`extract_program`; :mod:`opensir_lite.sandbox` runs it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from opensir_lite.prompts import CONCEPTS_TAG, FINAL_ANSWER_PREFIX, PROBLEM_TAG, PROGRAM_FENCE, THINK_TAG

MIN_PROBLEM_CHARS = 10  # OpenSIR: a problem shorter than this is illegal
MAX_CONCEPTS = 3  # OpenSIR: more comma-separated concepts than this is illegal
MIN_CONCEPT_CHARS = 10  # OpenSIR: shorter concepts are dropped; at least one must remain
MAX_ANSWER_CHARS = 500  # longer "answers" are garbage, not maths; refuse before parsing
PARSE_TIMEOUT_S = 2  # per answer, math-verify's own time limit
VERIFY_TIMEOUT_S = 2  # per comparison

MAX_BOXED_CANDIDATES = 64  # \\boxed occurrences tried from the end of a text (bounds hostile inputs)
MAX_BOXED_SCAN_CHARS = 20 * MAX_ANSWER_CHARS  # characters scanned for the closing brace of one \\boxed{


def _tag_regexes(tag: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    return re.compile(rf"<{tag}>", re.IGNORECASE), re.compile(rf"</{tag}>", re.IGNORECASE)


# Literal tag patterns only: searching for them is linear in the text, whatever the model wrote.
_TAGS = {tag: _tag_regexes(tag) for tag in (PROBLEM_TAG, CONCEPTS_TAG, THINK_TAG)}
_FINAL_LINE_START = FINAL_ANSWER_PREFIX + " $\\boxed{"


def tag_span(text: str, tag: str) -> tuple[int, int, int, int] | None:
    """(open start, content start, content end, close end) of the first ``<tag>`` that has a ``</tag>`` after it."""
    opening, closing = _TAGS[tag]
    start = opening.search(text)
    if start is None:
        return None
    end = closing.search(text, start.end())
    if end is None:
        return None
    return start.start(), start.end(), end.start(), end.end()


def tag_content(text: str, tag: str) -> str | None:
    """The stripped text between the first ``<tag>`` and the next ``</tag>`` (case-insensitive), or None."""
    span = tag_span(text, tag)
    return None if span is None else text[span[1] : span[2]].strip()


def clean_text(text: object) -> str:
    """Coerce model output to valid UTF-8 text (lone surrogates and invalid bytes become U+FFFD)."""
    if isinstance(text, bytes):
        return text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return text.encode("utf-8", errors="replace").decode("utf-8", errors="replace")


@dataclass(frozen=True)
class TeacherParse:
    """A parsed teacher output: ``problem`` and ``concepts`` when legal, else ``reason`` says why not."""

    problem: str | None = None
    concepts: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def parse_teacher_output(text: object) -> TeacherParse:
    """Parse ``<problem>`` and ``<concepts>`` from a teacher completion with OpenSIR's validity rules.

    Illegal reasons: no_problem, empty_problem, ellipsis_problem, short_problem, no_concepts, empty_concepts,
    too_many_concepts, multiline_concepts, short_concepts. Duplicate tags: the first pair counts, and as in the
    official code a problem is what lies between the first ``<problem>`` and the next ``</problem>``, tags inside
    included (the seeding filter :func:`contains_xml_tags` keeps such problems out of an initial pool).
    """
    text = clean_text(text)
    problem = tag_content(text, PROBLEM_TAG)
    if problem is None:
        return TeacherParse(reason="no_problem")
    if not problem:
        return TeacherParse(reason="empty_problem")
    if problem == "...":
        return TeacherParse(reason="ellipsis_problem")
    if len(problem) < MIN_PROBLEM_CHARS:
        return TeacherParse(reason="short_problem")
    concepts_text = tag_content(text, CONCEPTS_TAG)
    if concepts_text is None:
        return TeacherParse(reason="no_concepts")
    if not concepts_text:
        return TeacherParse(reason="empty_concepts")
    items = [c.strip().lower() for c in concepts_text.split(",")]
    if len(items) > MAX_CONCEPTS:
        return TeacherParse(reason="too_many_concepts")
    if "\n" in concepts_text or "\r" in concepts_text:
        return TeacherParse(reason="multiline_concepts")
    concepts = [c for c in items if len(c) >= MIN_CONCEPT_CHARS]
    if not concepts:
        return TeacherParse(reason="short_concepts")
    return TeacherParse(problem=problem, concepts=concepts)


def has_think_block(text: object) -> bool:
    """True when the text has a ``<think>...</think>`` block (the teacher format reward)."""
    return tag_span(clean_text(text), THINK_TAG) is not None


def has_final_answer_line(text: object) -> bool:
    """True when the text has ``Therefore, the final answer is: $\\boxed{...}$`` (the student format reward)."""
    text = clean_text(text)
    start = text.find(_FINAL_LINE_START)
    while start != -1:  # on the line of the first occurrence, a "}$" must close at least one character
        line_end = text.find("\n", start)
        line_end = len(text) if line_end == -1 else line_end
        if text.rfind("}$", start, line_end) > start + len(_FINAL_LINE_START):
            return True
        start = text.find(_FINAL_LINE_START, line_end)
    return False


def find_concepts_span(text: str) -> tuple[int, int] | None:
    """Character span of ``<concepts>...</concepts>`` (tags included), or None when either tag is missing."""
    span = tag_span(text, CONCEPTS_TAG)
    return None if span is None else (span[0], span[3])


def extract_boxed_answer(text: object) -> str | None:
    """The content of the last ``\\boxed{...}`` (nested braces balanced), or None.

    Hostile texts are bounded: at most ``MAX_BOXED_CANDIDATES`` occurrences are tried, each scanned for at most
    ``MAX_BOXED_SCAN_CHARS`` characters, so the work is linear in the text."""
    text = clean_text(text)
    start = text.rfind("\\boxed")
    tried = 0
    while start != -1 and tried < MAX_BOXED_CANDIDATES:
        tried += 1
        i = start + len("\\boxed")
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            stop = min(len(text), i + MAX_BOXED_SCAN_CHARS)
            while j < stop:
                ch = text[j]
                if ch == "\\" and j + 1 < len(text):  # skip escaped characters such as \{ and \}
                    j += 2
                    continue
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        content = text[i + 1 : j].strip()
                        return content or None
                j += 1
        start = text.rfind("\\boxed", 0, start)
    return None


# ---- answers: extract -> normalise -> compare ---------------------------------------------------------------
# How a student answer is read from a completion (``answer_extraction``):
#   latex      - the official OpenSIR training reading: math-verify's LaTeX extraction over the whole completion, a
#                boxed answer first, else an anchored one ("the final answer is: $12$"); never bare prose numbers.
#   latex_expr - the official OpenSIR *evaluation* reading: plain expressions too ("The answer is 18.").
#   boxed      - strict: the content of the last \\boxed{} only.
ANSWER_EXTRACTIONS = ("latex", "latex_expr", "boxed")
# How equal answers are grouped in the majority vote (``answer_vote``):
#   string      - the official code: equal strings of math-verify's normal form (``str`` of the sympy object).
#   equivalence - math-verify ``verify`` against each class's first answer (merges 3.0 and 3, (x+1)^2 and x^2+2x+1).
ANSWER_VOTES = ("string", "equivalence")


def _extraction_configs(mode: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    latex = LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)
    if mode == "latex":
        return [latex]
    if mode == "latex_expr":
        return [ExprExtractionConfig(), latex]
    raise ValueError(f"answer extraction must be one of {', '.join(ANSWER_EXTRACTIONS)}, got {mode!r}")


def parse_completion(text: object, mode: str = "latex", timeout_s: float = PARSE_TIMEOUT_S) -> tuple | None:
    """math-verify's reading of a whole completion as the official OpenSIR code calls it (``first_match``
    extraction and fallback): ``(sympy object, matched text)``, or None when nothing is read. ``boxed`` mode parses
    the last ``\\boxed{}`` content instead."""
    if mode == "boxed":
        return normalise_answer(extract_boxed_answer(text))
    configs = _extraction_configs(mode)
    text = clean_text(text)  # the whole completion, as the official code reads it (math-verify's time limit bounds it)
    from math_verify import parse

    try:
        parsed = parse(
            text,
            extraction_config=configs,
            extraction_mode="first_match",
            fallback_mode="first_match",
            parsing_timeout=timeout_s,
        )
    except Exception:  # noqa: BLE001 - the grammar or sympy may choke on anything; that is "no answer"
        return None
    return tuple(parsed) if parsed else None


def _math_verify_parse(text: str, with_expressions: bool, fallback: bool) -> tuple:
    """math-verify's parse of ``$text$`` under its time limit; () when nothing parses or the parser fails."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(boxed_match_priority=0)] + ([ExprExtractionConfig()] if with_expressions else [])
    try:
        parsed = parse(
            f"${text}$",
            extraction_config=configs,
            fallback_mode="first_match" if fallback else "no_fallback",
            parsing_timeout=PARSE_TIMEOUT_S,
        )
    except Exception:  # noqa: BLE001 - the grammar or sympy may choke on anything; that is "no parse"
        return ()
    return tuple(parsed)


def verify_parsed(gold: tuple | None, target: tuple | None, timeout_s: float = VERIFY_TIMEOUT_S) -> bool:
    if gold is None or target is None:
        return False
    from math_verify import verify

    try:
        return bool(verify(list(gold), list(target), timeout_seconds=timeout_s))
    except Exception:  # noqa: BLE001
        return False


@lru_cache(maxsize=16384)
def normalise_answer(answer: str | None) -> tuple | None:
    """Parse an answer string (the text a completion's answer was read from) into math-verify's normal form (a
    tuple of sympy objects), or None."""
    if answer is None:
        return None
    answer = clean_text(answer).strip()
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    return (
        _math_verify_parse(answer, with_expressions=False, fallback=False)
        or _math_verify_parse(answer, with_expressions=True, fallback=False)
        or None
    )


def _sympy_str(parsed: tuple | None) -> str | None:
    if not parsed:
        return None
    try:
        return str(parsed[0])
    except Exception:  # noqa: BLE001 - sympy objects holding NaN, zoo or worse may not even print
        return None


class Answer(str):
    """An answer read from a completion: the text it was read from (what grading and the evidence show), with
    ``key``, the official vote key math-verify gave it while reading the whole completion (``str`` of its first
    element, which is the raw match itself when math-verify could not parse the match)."""

    key: str | None

    def __new__(cls, text: str, key: str | None = None):
        answer = super().__new__(cls, text)
        answer.key = key
        return answer

    def __reduce__(self):  # pickles (across ranks) with its key
        return (Answer, (str(self), self.key))


def answer_key(answer: str | None) -> str | None:
    """The official OpenSIR vote key of an answer: ``str`` of math-verify's sympy object (``0.5`` and
    ``\\frac{1}{2}`` both give ``1/2``; ``3.0`` gives ``3.00000000000000`` and ``3`` gives ``3``). An
    :class:`Answer` read from a completion carries the key the official code computes there; any other answer
    string is parsed on its own."""
    key = getattr(answer, "key", None)
    return key if key is not None else _string_key(None if answer is None else str(answer))


@lru_cache(maxsize=16384)
def _string_key(answer: str | None) -> str | None:
    return _sympy_str(normalise_answer(answer))


@lru_cache(maxsize=16384)
def normalise_gold(gold: str | None) -> tuple | None:
    """A benchmark's gold answer in math-verify's form; unlike model answers, unparseable LaTeX falls back to its
    string form (gold answers such as ``-1<x \\leqslant 1:(-1,1]`` are trusted text)."""
    if gold is None:
        return None
    gold = clean_text(gold).strip()
    if not gold or len(gold) > 4 * MAX_ANSWER_CHARS:
        return None
    return _math_verify_parse(gold, with_expressions=True, fallback=True) or (gold,)


def answers_equal(a: str | None, b: str | None, vote: str = "equivalence") -> bool:
    """Whether two model answers are the same answer: equal vote keys (``string``, the official rule) or
    mathematical equivalence (``equivalence``, math-verify, time-limited). False when either is invalid."""
    if a is None or b is None:
        return False
    if vote == "string":
        key = answer_key(a)
        return key is not None and key == answer_key(b)
    return a.strip() == b.strip() or verify_parsed(normalise_answer(a), normalise_answer(b))


def gold_matches(answer: str | None, gold: str | None) -> bool:
    """Whether a model answer equals a benchmark gold answer (math-verify, time-limited)."""
    if answer is None or gold is None:
        return False
    return answer.strip() == gold.strip() or verify_parsed(normalise_gold(gold), normalise_answer(answer))


def extract_answer(text: object, mode: str = "latex") -> str | None:
    """The student's answer as the text it was read from (``\\frac{1}{2}``, ``18``), or None.

    ``latex`` and ``latex_expr`` read the completion as the official code does and, as it does, keep the answer
    only when its key (``str`` of math-verify's first element) looks like maths (:func:`is_math_expression`): an
    :class:`Answer`, the matched text carrying that key. ``boxed`` keeps the last boxed expression when it parses."""
    if mode == "boxed":
        answer = extract_boxed_answer(text)
        return answer if normalise_answer(answer) is not None else None
    parsed = parse_completion(text, mode)
    if not parsed:
        return None
    key = _sympy_str(parsed)  # the official key: str(answer[0]), whatever math-verify returned
    if key is None or not is_math_expression(key):
        return None
    source = parsed[1] if len(parsed) > 1 and isinstance(parsed[1], str) else key
    source = source.strip() or key
    return Answer(source if len(source) <= MAX_ANSWER_CHARS else key, key)


# ---- the official filters on answers and problems ---------------------------------------------------------
_CURRENCY = "[$£€¥¢₹₽₪₨₩₦₡₵₴₸₺₼]"
_MATH_PATTERNS = [
    re.compile(p)
    for p in (
        r"^-?\d+(\.\d+)?$",  # integers and decimals
        r"^-?\.\d+$",  # .35625
        r"^-?\d{1,3}(,\d{3})*(\.\d+)?$",  # 12,500.00
        r"^\d+(\.\d+)?(,\s*\d+(\.\d+)?)+$",  # 15, 21, 27
        r"^\d+(\.\d+)?(:\d+(\.\d+)?)+$",  # ratios 4:5
        r"^\d+(\.\d+)?\\?%$",  # percentages
        r"^\d+!$",  # factorials
        r"^\\\$\d+(\.\d+)?$",  # \$18.90
        rf"^({_CURRENCY}?\d+(\.\d+)?{_CURRENCY}?|\d+(\.\d+)?{_CURRENCY})$",  # £500, 142.86$
        r"^\d+/\d+$",  # fractions
    )
]
_MATH_SEARCHES = [
    re.compile(p)
    for p in (
        r"\\(pi|theta|alpha|beta|gamma|delta|epsilon|sigma|mu|nu|rho|tau|phi|psi|omega)",
        r"\\(int|sum|prod|lim|sqrt|frac|sin|cos|tan|log|ln|exp)",
        r"\\(circ|infty)",
        r"\\;",
        r"\\\w+",  # any LaTeX command
        r"[\+\-\*/\^=<>(){}[\]]",  # operators and brackets
        # notation
        r"^\d+\^\d+$",  # powers like 135^2
        r"^\d+[a-z]$",  # 2a
        r"^\d+\$$",  # 1$
        r"^[a-zA-Z]{1,2}$",  # one- or two-letter variables
        r"[_\^]",  # subscripts, superscripts
        r"E_[a-z]",  # E_k
        r"^\d+(\.\d+)?[eE][+-]?\d+$",  # 1.23e-4
    )
]
_MATH_CHARACTER = re.compile(r"[\d\+\-\*/\^=<>(){}[\]\\%!$:£€¥¢₹₽₪₨₩₦₡₵₴₸₺₼]")
_LETTERS_AND_SPACES = re.compile(r"^[A-Za-z\s]+$")
_ALPHANUMERIC = re.compile(r"^[A-Za-z0-9]+$")
_TEXT_COMMAND = re.compile(r"\\text\{[^}]*\}")


def is_math_expression(s: str | None) -> bool:
    """The official code's test that a parsed answer looks like maths (its ``is_math_expression``, rule for rule):
    numbers, decimals, thousands separators, lists, ratios, percentages, factorials, currency, fractions, LaTeX maths
    commands, operators, powers, variables (``2a``, ``x``, ``pi``), subscripts, scientific notation, short
    alphanumerics and digits with letters (``12 apples``); not empty, not ``\\text{...}``, not the prompt's
    ``\\boxed{ANSWER}`` placeholder, not descriptive text, all-caps labels or words of more than three letters."""
    if not s or s.isspace() or s.strip() == "\\boxed{ANSWER}" or _TEXT_COMMAND.match(s):
        return False
    if any(p.match(s) for p in _MATH_PATTERNS) or any(p.search(s) for p in _MATH_SEARCHES):
        return True
    if len(s) > 10 and " " in s and not _MATH_CHARACTER.search(s):  # descriptive text
        return False
    if s.isupper() and len(s) > 3 and s.isalpha():  # labels
        return False
    if _LETTERS_AND_SPACES.match(s) and len(s) > 3:  # words
        return False
    if len(s) <= 3 and _ALPHANUMERIC.match(s):  # short variables and constants
        return True
    return bool(re.search(r"\d", s) and re.search(r"[a-zA-Z]", s))  # digits with letters


# A tag such as <problem>, </think> or <br/>: a letter-led name of at least two characters (x < 5 is no tag).
_XML_TAG_RE = re.compile(r"</?([a-zA-Z][a-zA-Z0-9_-]*)(?:\s[^<>]*?)?/?>")


def contains_xml_tags(text: str | None) -> bool:
    """True when the text holds an XML-like tag (the official seeding filter on problems)."""
    if not text:
        return False
    return any(len(m.group(1)) > 1 for m in _XML_TAG_RE.finditer(str(text).strip()))


def answer_in_problem(answer_key_text: str | None, problem: str | None) -> bool:
    """True when the majority answer's normal form appears in the problem as a whole word (the official seeding
    filter: a problem that states its own answer)."""
    if not answer_key_text or not problem:
        return False
    return re.search(r"\b" + re.escape(answer_key_text) + r"\b", problem) is not None


def has_digit(text: str | None) -> bool:
    """True when the text contains a digit (the official seeding filter: answers without numbers are words)."""
    return bool(text) and any(ch.isdigit() for ch in str(text))


MAX_PROGRAM_CHARS = 8000  # a longer "program" is not a short answer computation; refused unread
_FENCE, _LANGUAGE = PROGRAM_FENCE[:3], PROGRAM_FENCE[3:]  # "```" and "python"
_FENCE_RE = re.compile(
    re.escape(_FENCE) + r"[ \t]*(?:" + re.escape(_LANGUAGE) + r"3?|py)?[ \t]*\n(.*?)" + re.escape(_FENCE),
    re.DOTALL | re.IGNORECASE,
)


def extract_program(text: object) -> str | None:
    """The program of a program-check completion: the last closed code block (``PROGRAM_FENCE`` or a bare fence)
    that is not empty and not too long, or None (no block, an unclosed one, only whitespace)."""
    blocks = [b for b in _FENCE_RE.findall(clean_text(text)) if b.strip()]
    if not blocks or len(blocks[-1]) > MAX_PROGRAM_CHARS:
        return None
    return blocks[-1].strip("\n") + "\n"
