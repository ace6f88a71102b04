"""Seeding an initial pool, as the official ``generate_initial_problems.py`` does before training: the teacher prompt
is applied to the seed problem and then to problems already accepted; each candidate is solved G times and kept
when it passes the official filters: its solve rate is inside the gate, the majority answer contains a digit and
does not appear in the problem as a whole word, and the problem has at least 30 characters and no XML tag. The
output is a pool file (``pool.jsonl`` format) that the trainer accepts as ``initial_pool_path``; rerunning with the
same output resumes and appends until N problems are accepted (the paper's run used 512).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from opensir_lite.generation import SamplingSettings, generate
from opensir_lite.grading import majority_vote
from opensir_lite.parsing import (
    answer_in_problem,
    answer_key,
    contains_xml_tags,
    extract_answer,
    has_digit,
    parse_teacher_output,
)
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.prompts import SEED_PROBLEM, render, student_messages, teacher_messages
from opensir_lite.rewards import GATE_LOWER, GATE_UPPER

OUT_OF_RANGE = "solve_rate_out_of_range"
DUPLICATE = "duplicate"
NO_DIGIT = "answer_without_digit"  # official: an answer with no number is words read as symbols (A*N*S*W*E*R)
ANSWER_IN_PROBLEM = "answer_in_problem"  # official: the problem states its own answer
SHORT_FOR_POOL = "problem_under_30_chars"  # official: too short to be a meaningful problem
XML_IN_PROBLEM = "xml_in_problem"  # official: tags leaked into the problem text
MIN_SEED_PROBLEM_CHARS = 30  # the official seeding's minimum problem length


def seed_rejection(
    problem: str, majority: str | None, solve_rate: float | None, lower: float, upper: float
) -> str | None:
    """Why the official seeding filters would reject a parsed candidate (None: accept)."""
    if contains_xml_tags(problem):
        return XML_IN_PROBLEM
    if solve_rate is None or not lower - 1e-9 <= solve_rate <= upper + 1e-9:
        return OUT_OF_RANGE
    key = answer_key(majority)
    if not has_digit(key):
        return NO_DIGIT
    if len(problem.strip()) < MIN_SEED_PROBLEM_CHARS:
        return SHORT_FOR_POOL
    if answer_in_problem(key, problem):
        return ANSWER_IN_PROBLEM
    return None


@dataclass
class SeedSettings:
    n_problems: int = 32  # problems to accept
    num_generations: int = 8  # G student samples per candidate
    solve_rate_lower: float = GATE_LOWER  # accepted range: the paper's gate, 0.5 to 0.9
    solve_rate_upper: float = GATE_UPPER
    candidates_per_batch: int = 16  # teacher prompts per batch (one sample each)
    max_attempts: int = 512  # candidates tried in this invocation before giving up
    max_seconds: float = 0.0  # time box of this invocation (0: none); a batch under way finishes
    teacher: SamplingSettings | None = None
    student: SamplingSettings | None = None
    seed: int = 0
    use_system_prompt: bool = True
    teacher_format_hint: str = "none"  # see SelfPlayConfig
    teacher_prefill: str = ""
    answer_extraction: str = "latex"  # official training reading (see SelfPlayConfig)
    answer_vote: str = "string"  # official vote
    drop_duplicates: bool = True  # ours: the official seeding may accept the same problem twice


@dataclass
class SeedReport:
    accepted: int  # accepted problems in the file (excluding the seed)
    tried: int  # candidates tried in this invocation
    reached: bool  # N reached
    path: Path
    seconds: float = 0.0  # wall time of this invocation
    accepted_now: int = 0  # accepted in this invocation
    outcomes: dict[str, int] = field(default_factory=dict)  # this invocation's candidates by outcome (reason)

    @property
    def accepted_per_minute(self) -> float:
        return self.accepted_now / (self.seconds / 60) if self.seconds > 0 else 0.0


def accepted_count(pool: ProblemPool) -> int:
    return sum(1 for r in pool.entries if r.source != "seed")


def load_or_start(path: Path, seed_problem: str = SEED_PROBLEM) -> ProblemPool:
    """Resume from an existing output file, or start from the seed problem."""
    return ProblemPool.from_jsonl(path) if path.is_file() else ProblemPool.from_seed(seed_problem)


def seed_pool(
    model,
    tokenizer,
    output: str | Path,
    settings: SeedSettings,
    embedder: Callable[[list[str]], np.ndarray] | None = None,
    progress: bool = True,
) -> SeedReport:
    """Grow ``output`` until ``n_problems`` are accepted or ``max_attempts`` candidates were tried."""
    from tqdm.auto import tqdm

    output = Path(output)
    pool = load_or_start(output)
    rng = np.random.default_rng(settings.seed + len(pool.history))  # a resumed run continues a fresh stream
    G = settings.num_generations
    teacher = settings.teacher or SamplingSettings(1024, 1.0, 1.0)
    student = settings.student or SamplingSettings(1024, 1.0, 1.0)
    seen = {r.problem.strip().lower() for r in pool.entries}
    tried = 0
    start, before = time.perf_counter(), accepted_count(pool)
    outcomes: Counter = Counter()
    bar = tqdm(
        total=settings.n_problems,
        initial=min(accepted_count(pool), settings.n_problems),
        disable=not progress,
        desc="accepted",
    )

    def out_of_time() -> bool:
        return settings.max_seconds > 0 and time.perf_counter() - start >= settings.max_seconds

    while accepted_count(pool) < settings.n_problems and tried < settings.max_attempts and not out_of_time():
        batch = min(settings.candidates_per_batch, settings.max_attempts - tried)
        references = pool.sample_references(batch, rng)
        prompts = [
            render(tokenizer, teacher_messages(r.problem, settings.use_system_prompt, settings.teacher_format_hint))
            + settings.teacher_prefill
            for r in references
        ]
        outs = generate(model, tokenizer, prompts, 1, teacher)
        parses = [parse_teacher_output(settings.teacher_prefill + c.text) for c in outs]
        candidates = [i for i, p in enumerate(parses) if p.ok]
        student_prompts = [
            render(tokenizer, student_messages(parses[i].problem, settings.use_system_prompt)) for i in candidates
        ]
        solutions = generate(model, tokenizer, student_prompts, G, student)
        records = []
        for i, parse in enumerate(parses):
            record = ProblemRecord(
                id=pool.new_id(), problem=parse.problem or "", concepts=list(parse.concepts), legal=False,
                reason=parse.reason, reference_id=references[i].id, source="seeding",
            )  # fmt: skip
            if parse.ok:
                k = candidates.index(i)
                group = solutions[k * G : (k + 1) * G]
                answers = [extract_answer(c.text, settings.answer_extraction) for c in group]
                vote = majority_vote(answers, by=settings.answer_vote)
                record.solve_rate, record.majority_answer, record.n_valid_answers = (
                    vote.solve_rate,
                    vote.majority,
                    vote.n_valid,
                )
                record.mean_student_tokens = float(np.mean([c.num_tokens for c in group]))
                key = parse.problem.strip().lower()
                record.legal = True  # parsed (official legality); the filters below decide the pool
                record.reason = seed_rejection(
                    parse.problem, vote.majority, vote.solve_rate, settings.solve_rate_lower, settings.solve_rate_upper
                )
                if record.reason is None and settings.drop_duplicates and key in seen:
                    record.reason = DUPLICATE
                if record.reason is None:
                    record.in_pool = True
                    seen.add(key)
            if record.in_pool and accepted_count(pool) + sum(r.in_pool for r in records) >= settings.n_problems:
                record.in_pool, record.reason = False, "over_target"  # N reached within this batch
            records.append(record)
            outcomes["accepted" if record.in_pool else (record.reason or "unknown")] += 1
        embeddings = {}
        new_entries = [r for r in records if r.in_pool]
        if embedder is not None and new_entries:
            vectors = embedder([r.problem for r in new_entries])
            embeddings = {r.id: v for r, v in zip(new_entries, vectors, strict=True)}
        pool.add(records, embeddings)
        pool.save(output)
        tried += batch
        bar.update(min(accepted_count(pool), settings.n_problems) - bar.n)
        bar.set_postfix(tried=tried)
    bar.close()
    accepted = accepted_count(pool)
    return SeedReport(
        accepted=accepted, tried=tried, reached=accepted >= settings.n_problems, path=output,
        seconds=time.perf_counter() - start, accepted_now=accepted - before, outcomes=dict(outcomes),
    )  # fmt: skip


QUESTION_SOURCE = "question"  # a pool entry that is a human-written question (no answer was read)


def pool_from_questions(questions: list[tuple[int, str]], benchmark: str) -> ProblemPool:
    """An initial pool of human-written questions, answers never read: one entry per (row index, question), in
    the given order, ``source`` ``question`` and the benchmark row as ``reference_id`` (provenance). The variant
    pool of the Qwen recipes uses GSM8K rows that no evaluation subset and no probe contains."""
    records = [
        ProblemRecord(id=k, problem=q.strip(), in_pool=True, source=QUESTION_SOURCE, reference_id=row,
                      concepts=[benchmark])
        for k, (row, q) in enumerate(questions)
        if q.strip()
    ]  # fmt: skip
    return ProblemPool(records)
