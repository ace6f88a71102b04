"""Prompts: one definition of the tags, shared with the parser."""

import pytest

from opensir_lite.parsing import parse_teacher_output
from opensir_lite.prompts import (
    EXAMPLE_REFERENCE,
    FINAL_ANSWER_LINE,
    TEACHER_FORMAT_HINT,
    render,
    student_messages,
    supports_system_prompt,
    teacher_messages,
)


def test_teacher_prompt_names_the_tags_and_reference():
    msgs = teacher_messages("What is 1+1?")
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "What is 1+1?" in user and "conceptually different" in user
    for tag in ("<think>", "<problem>", "<concepts>"):
        assert tag in user
    assert TEACHER_FORMAT_HINT not in user  # the paper's prompt by default
    assert teacher_messages("x", format_hint="placeholders")[1]["content"].endswith(TEACHER_FORMAT_HINT)


@pytest.mark.parametrize("use_system", [True, False])
def test_worked_example_hint(use_system):
    """format_hint="example": one worked exchange (the request for EXAMPLE_REFERENCE, a legal reply) comes first."""
    msgs = teacher_messages("What is 1+1?", use_system_prompt=use_system, format_hint="example")
    roles = [m["role"] for m in msgs]
    assert roles == (["system"] if use_system else []) + ["user", "assistant", "user"]
    assert EXAMPLE_REFERENCE in msgs[-3]["content"] and "What is 1+1?" in msgs[-1]["content"]
    assert parse_teacher_output(msgs[-2]["content"]).ok  # the worked reply is a legal teacher output
    # without a system message the official teacher prompt is the request alone (the student's folds its system text in)
    assert ("You are a helpful AI Assistant" in msgs[0]["content"]) is use_system
    assert teacher_messages("y", use_system_prompt=False) == [teacher_messages("y")[1]]
    with pytest.raises(ValueError, match="teacher_format_hint"):
        teacher_messages("x", format_hint="fancy")


def test_format_hint_example_is_not_a_problem():
    # a model that copies the hint's example writes "..." placeholders, which are illegal
    example = TEACHER_FORMAT_HINT.split("own text:\n", 1)[1]
    assert parse_teacher_output(example).reason == "ellipsis_problem"


def test_student_prompt_and_no_system_role():
    msgs = student_messages("Solve 2x = 4.", use_system_prompt=False)
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    assert FINAL_ANSWER_LINE in msgs[0]["content"] and msgs[0]["content"].endswith("Solve 2x = 4.")


def test_render_with_chat_template(tokenizer):
    assert supports_system_prompt(tokenizer)  # SmolLM2's template takes a system message
    text = render(tokenizer, student_messages("Solve 2x = 4."))
    assert text.rstrip().endswith("assistant") and "Solve 2x = 4." in text
