"""Prompts and tags: the single definition of the teacher and student prompts and of the tags the parser reads."""

from __future__ import annotations

SEED_PROBLEM = "What is 1+1?"

# Tags shared by the teacher prompt and the teacher parser.
THINK_TAG = "think"
PROBLEM_TAG = "problem"
CONCEPTS_TAG = "concepts"

# The student's final line; the parser and the student format reward read the same words.
FINAL_ANSWER_PREFIX = "Therefore, the final answer is:"
FINAL_ANSWER_LINE = FINAL_ANSWER_PREFIX + " $\\boxed{ANSWER}$"

TEACHER_SYSTEM_PROMPT = "You are a helpful AI Assistant"

TEACHER_USER_TEMPLATE = (
    "You are given a math problem: {problem}\n\n"
    "Your task is to create a math problem that is conceptually different from the provided problem. "
    "The new problem must be answerable with a numerical value or mathematical expression.\n\n"
    f"First, explain how your new problem differs conceptually from the original problem inside the "
    f"<{THINK_TAG}>...</{THINK_TAG}> tags. Then, present your new problem inside the "
    f"<{PROBLEM_TAG}>...</{PROBLEM_TAG}> tags. Finally, identify at most three math concepts required to solve "
    f"your problem. Provide these concepts in a comma separated list inside the "
    f"<{CONCEPTS_TAG}>...</{CONCEPTS_TAG}> tags."
)

# Optional help with the output format (teacher_format_hint; "none" in the paper's setting):
#   placeholders - the tag layout with "..." placeholders appended to the prompt (the parser rejects a copied "...").
#   example      - one worked exchange before the real request: the teacher prompt for EXAMPLE_REFERENCE and a reply
#                  in the format. SmolLM2-135M writes no legal problem without help and copies an inline example;
#                  after a worked exchange it writes its own problems in the format a third to a half of the time.
TEACHER_FORMAT_HINTS = ("none", "placeholders", "example")
TEACHER_FORMAT_HINT = (
    "\n\nAnswer in exactly this format, replacing each ... with your own text:\n"
    f"<{THINK_TAG}>...</{THINK_TAG}>\n<{PROBLEM_TAG}>...</{PROBLEM_TAG}>\n<{CONCEPTS_TAG}>..., ...</{CONCEPTS_TAG}>"
)
EXAMPLE_REFERENCE = "Tom has 3 apples and eats 1. How many apples are left?"
EXAMPLE_REPLY = (
    f"<{THINK_TAG}>The original problem subtracts. My problem uses multiplication and a different object.</{THINK_TAG}>\n"
    f"<{PROBLEM_TAG}>A garden has 4 rows of 5 tulips. How many tulips are in the garden?</{PROBLEM_TAG}>\n"
    f"<{CONCEPTS_TAG}>multiplication, arrays of objects</{CONCEPTS_TAG}>"
)

STUDENT_SYSTEM_PROMPT = (
    "You are a helpful AI Assistant, designed to provide well-reasoned and detailed responses. You FIRST think "
    "about the reasoning process step by step and then provide the user with the answer. The last line of your "
    f"response should be '{FINAL_ANSWER_LINE}' (without quotes) where ANSWER is just the final number or "
    "expression that solves the problem."
)

# The program check (opensir_lite.programs): the policy writes a program that prints a problem's answer. The fence
# is defined once, for this prompt and for parsing.extract_program.
PROGRAM_FENCE = "```python"
PROGRAM_SYSTEM_PROMPT = "You are a helpful AI Assistant who solves math problems by writing Python programs."
PROGRAM_USER_TEMPLATE = (
    "Write a short Python 3 program that computes the answer to the math problem below and prints only the final "
    "answer (a number or a mathematical expression) as its last line of output. Use only the standard library "
    f"(math, fractions) or sympy; read no input. Put the whole program in one {PROGRAM_FENCE} ... ``` block.\n\n"
    "Problem: {problem}"
)

Messages = list[dict[str, str]]


def _messages(system: str, user: str, use_system_prompt: bool) -> Messages:
    if use_system_prompt:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return [{"role": "user", "content": system + "\n\n" + user}]


def teacher_messages(reference_problem: str, use_system_prompt: bool = True, format_hint: str = "none") -> Messages:
    """Chat messages asking the teacher for a problem conceptually different from ``reference_problem``, with the
    optional format help ``format_hint`` (one of :data:`TEACHER_FORMAT_HINTS`)."""
    if format_hint not in TEACHER_FORMAT_HINTS:
        raise ValueError(f"teacher_format_hint must be one of {', '.join(TEACHER_FORMAT_HINTS)}, got {format_hint!r}")

    def request(problem: str) -> dict[str, str]:
        user = TEACHER_USER_TEMPLATE.replace("{problem}", problem)
        return {"role": "user", "content": user + (TEACHER_FORMAT_HINT if format_hint == "placeholders" else "")}

    turns = (
        [request(EXAMPLE_REFERENCE), {"role": "assistant", "content": EXAMPLE_REPLY}]
        if format_hint == "example"
        else []
    )
    turns.append(request(reference_problem))
    if use_system_prompt:
        return [{"role": "system", "content": TEACHER_SYSTEM_PROMPT}, *turns]
    return turns  # official: without a system message the teacher prompt is the request alone


def student_messages(problem: str, use_system_prompt: bool = True) -> Messages:
    """Chat messages asking the student to solve ``problem`` and end with the boxed final-answer line."""
    return _messages(STUDENT_SYSTEM_PROMPT, problem, use_system_prompt)


def program_messages(problem: str, use_system_prompt: bool = True) -> Messages:
    """Chat messages asking for a program that prints the answer of ``problem`` (the program check)."""
    return _messages(PROGRAM_SYSTEM_PROMPT, PROGRAM_USER_TEMPLATE.replace("{problem}", problem), use_system_prompt)


def supports_system_prompt(tokenizer) -> bool:
    """True when the tokenizer's chat template accepts a system message (Gemma's, for one, raises)."""
    try:
        tokenizer.apply_chat_template(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], tokenize=False
        )
    except Exception:  # noqa: BLE001 - any template error means "no system role"
        return False
    return True


def render(tokenizer, messages: Messages) -> str:
    """Apply the model's chat template with the generation prompt appended (text, not tokens)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
