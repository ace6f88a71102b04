"""Parsing of model text: teacher outputs into (problem, concepts), student outputs into answers.

Every step is extract -> normalise -> compare, each a pure function that returns None (or an explanatory reason)
instead of raising, because model text is untrusted input. Nothing here evaluates code: answers are parsed by
math-verify's LaTeX grammar into sympy objects under a time limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from opensir_lite.prompts import CONCEPTS_TAG, FINAL_ANSWER_PREFIX, PROBLEM_TAG, THINK_TAG

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
_NESTED_TAG_RE = re.compile(rf"</?({PROBLEM_TAG}|{CONCEPTS_TAG})>", re.IGNORECASE)
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

    Illegal reasons: no_problem, empty_problem, ellipsis_problem, nested_tags, short_problem, no_concepts,
    empty_concepts, too_many_concepts, multiline_concepts, short_concepts. Duplicate tags: the first pair counts.
    """
    text = clean_text(text)
    problem = tag_content(text, PROBLEM_TAG)
    if problem is None:
        return TeacherParse(reason="no_problem")
    if not problem:
        return TeacherParse(reason="empty_problem")
    if problem == "...":
        return TeacherParse(reason="ellipsis_problem")
    if _NESTED_TAG_RE.search(problem):
        return TeacherParse(reason="nested_tags")
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


def _verify(gold: tuple | None, target: tuple | None) -> bool:
    if gold is None or target is None:
        return False
    from math_verify import verify

    try:
        return bool(verify(list(gold), list(target), timeout_seconds=VERIFY_TIMEOUT_S))
    except Exception:  # noqa: BLE001
        return False


@lru_cache(maxsize=16384)
def normalise_answer(answer: str | None) -> tuple | None:
    """Parse a model's answer string into math-verify's normal form (a tuple of sympy objects), or None."""
    if answer is None:
        return None
    answer = clean_text(answer).strip()
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    return _math_verify_parse(answer, with_expressions=False, fallback=False) or None


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


def answers_equal(a: str | None, b: str | None) -> bool:
    """Mathematical equivalence of two model answers (math-verify, time-limited); False when either is invalid."""
    if a is None or b is None:
        return False
    return a.strip() == b.strip() or _verify(normalise_answer(a), normalise_answer(b))


def gold_matches(answer: str | None, gold: str | None) -> bool:
    """Whether a model answer equals a benchmark gold answer (math-verify, time-limited)."""
    if answer is None or gold is None:
        return False
    return answer.strip() == gold.strip() or _verify(normalise_gold(gold), normalise_answer(answer))


def extract_answer(text: object) -> str | None:
    """The student's answer: the last boxed expression, kept only if it parses as maths."""
    answer = extract_boxed_answer(text)
    return answer if normalise_answer(answer) is not None else None
