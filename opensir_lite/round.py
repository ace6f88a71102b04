"""One self-play round as data, and the stages that fill it in.

A :class:`Round` holds everything a round produces; each stage is a function that reads what earlier stages put
there and fills its own fields, in this order (the module docstring of :mod:`opensir_lite.selfplay` runs them):

``draw`` references from the pool -> ``propose`` (teacher prompts and samples, parsed: a parsed problem is legal, as
in the official code) -> ``solve`` (G student samples per legal problem) -> ``grade`` (answers, majority vote, solve
rate) -> ``novelty`` (embeddings, novelty, near-duplicates) -> ``make_records`` (one pool record per teacher output)
-> ``score`` (the four teacher rewards, computed once, and the combined score) -> ``select`` (teacher groups by the
variance of the combined score, student problems best first) -> ``grow`` (the pool) -> then
:mod:`opensir_lite.round_output` turns the round into TRL rows (``batch``), metrics and evidence.

No stage holds state between rounds: the pool, the random streams and the samplers are passed in, so each stage
runs on a hand-built round in the tests. On several processes each rank plays its share; the stages that need the
whole round (novelty, grow) gather it with :func:`opensir_lite.distributed.all_ranks`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opensir_lite.distributed import all_ranks
from opensir_lite.embedding import max_similarities, novelty_scores
from opensir_lite.generation import Completion
from opensir_lite.grading import Vote, majority_vote
from opensir_lite.method_args import parse_append_strategy
from opensir_lite.parsing import TeacherParse, extract_answer, parse_teacher_output
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.prompts import render, student_messages, teacher_messages
from opensir_lite.rewards import TEACHER, TEACHER_REWARD_NAMES, combined_score, finite_or_none
from opensir_lite.sampling import Sampler

MAX_STORED_OUTPUT_CHARS = 1000  # raw teacher output kept for illegal problems (for inspection)


@dataclass
class Round:
    """One round: filled in stage by stage. Lists of this rank's share unless a name says ``round_`` (gathered)."""

    step: int
    references: list[ProblemRecord] = field(default_factory=list)  # one per teacher prompt (this rank)
    all_references: list[ProblemRecord] = field(default_factory=list)  # every rank's
    teacher_completions: list[Completion] = field(default_factory=list)
    teacher_texts: list[str] = field(default_factory=list)  # prefill + completion: what the teacher wrote
    parses: list[TeacherParse] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)  # teacher outputs that parsed (legal problems)
    student_completions: list[Completion] = field(default_factory=list)  # G per candidate, in candidate order
    answers: list[str | None] = field(default_factory=list)
    votes: list[Vote] = field(default_factory=list)  # one per candidate
    embeddings: np.ndarray | None = None  # of the candidates' problems
    novelty: list[float] = field(default_factory=list)  # per candidate
    near_duplicate: list[bool] = field(default_factory=list)  # per candidate ([] when the rule is off)
    records: list[ProblemRecord] = field(default_factory=list)  # one per teacher output
    teacher_groups: list[int] = field(default_factory=list)  # trained teacher groups
    student_problems: list[int] = field(default_factory=list)  # record indices of trained student problems
    round_records: list[ProblemRecord] = field(default_factory=list)  # every rank's records, rank order
    pool_added: int = 0
    program_fields: dict[int, dict[str, Any]] = field(default_factory=dict)  # per record id (program check)
    rows: dict[str, list] = field(default_factory=dict)  # what TRL trains on
    logprobs: list[list[float | None]] | None = None  # the sampler's per-token log-probabilities of each row
    stats: dict[str, Any] = field(default_factory=dict)  # the round's metrics
    advantages: dict[str, Any] = field(default_factory=dict)  # the trained student rows' advantage split
    times: dict[str, float] = field(default_factory=dict)
    degenerate: Counter = field(default_factory=Counter)  # degenerate events (empty pool, non-finite values)

    @property
    def cand_pos(self) -> dict[int, int]:
        """Teacher output index -> its position among the candidates."""
        return {i: k for k, i in enumerate(self.candidates)}

    def group(self, k: int, G: int) -> range:
        """Indices of candidate ``k``'s G student completions."""
        return range(k * G, (k + 1) * G)

    def finite(self, value: object, default: float | None = None) -> float | None:
        """A finite float, or ``default`` with the event counted (``degenerate/nonfinite_value``)."""
        x = finite_or_none(value)
        if x is None and value is not None:
            self.degenerate["nonfinite_value"] += 1
            return default
        return default if x is None else x


class timed:
    """``with timed(rnd, "grading"):`` adds the block's seconds to ``rnd.times``."""

    def __init__(self, rnd: Round, name: str):
        self.rnd, self.name = rnd, name

    def __enter__(self):
        self.t0 = time.perf_counter()

    def __exit__(self, *exc):
        self.rnd.times[self.name] = self.rnd.times.get(self.name, 0.0) + time.perf_counter() - self.t0


def draw(rnd: Round, pool: ProblemPool, n_groups: int, rng: np.random.Generator, rank: int = 0, world: int = 1):
    """References for ``n_groups`` teacher prompts, drawn from the shared stream, each rank taking its slice."""
    everyone = pool.sample_references(n_groups * world, rng)
    rnd.references, rnd.all_references = everyone[rank * n_groups : (rank + 1) * n_groups], everyone


def propose(rnd: Round, args, sample: Sampler, use_system_prompt: bool) -> None:
    """G teacher samples per reference, the prefill prepended once, each parsed."""
    prefill = args.teacher_prefill or ""
    hint = args.teacher_format_hint
    prompts = [render(sample.tokenizer, teacher_messages(r.problem, use_system_prompt, hint)) + prefill
               for r in rnd.references]  # fmt: skip
    with timed(rnd, "teacher_generation"):
        rnd.teacher_completions = sample(prompts, "teacher")
    rnd.teacher_texts = [prefill + c.text for c in rnd.teacher_completions]
    rnd.parses = [parse_teacher_output(text) for text in rnd.teacher_texts]
    rnd.candidates = [i for i, p in enumerate(rnd.parses) if p.ok]


def solve(rnd: Round, sample: Sampler, use_system_prompt: bool) -> None:
    """G student samples for every legal problem, in one batched call."""
    prompts = [render(sample.tokenizer, student_messages(rnd.parses[i].problem, use_system_prompt))
               for i in rnd.candidates]  # fmt: skip
    with timed(rnd, "student_generation"):
        rnd.student_completions = sample(prompts, "student")


def grade(rnd: Round, args) -> None:
    """Answers, and per legal problem the majority vote and its solve rate (None when no answer is valid)."""
    G = args.num_generations
    with timed(rnd, "grading"):
        rnd.answers = [extract_answer(c.text, args.answer_extraction) for c in rnd.student_completions]
        rnd.votes = [majority_vote(rnd.answers[k * G : (k + 1) * G], by=args.answer_vote)
                     for k in range(len(rnd.candidates))]  # fmt: skip


def novelty(rnd: Round, args, pool: ProblemPool, embed: Callable[[list[str]], np.ndarray],
            example: Callable[[], np.ndarray] | None = None, rank: int = 0) -> None:  # fmt: skip
    """Embeddings, novelty and near-duplicate flags of this rank's problems, each measured against the pool (or its
    newest entries plus the round's references), the worked example when prompts show it (``example``: its
    embedding), and the other parsed problems of the whole (gathered) round."""
    problems = [rnd.parses[i].problem for i in rnd.candidates]
    with timed(rnd, "embedding"):
        pool.ensure_embeddings(embed)
        local = embed(problems) if problems else np.zeros((0, 0), dtype=np.float32)
        gathered = all_ranks(local)
        offset = sum(e.shape[0] if e.size else 0 for e in gathered[:rank])
        present = [e for e in gathered if e.size]
        batch = np.concatenate(present) if present else np.zeros((0, 0), dtype=np.float32)
        ids = pool.diversity_ids(args.diversity_recent_pool_size, [r.id for r in rnd.all_references])
        neighbours = pool.embedding_matrix(ids)
        if batch.size and example is not None:  # the worked example is in every prompt: not novel
            hint = example()
            neighbours = np.concatenate([neighbours, hint]) if neighbours.size else hint
        mine = slice(offset, offset + len(problems))
        rnd.embeddings = local
        rnd.novelty = list(novelty_scores(batch, neighbours, args.novelty_top_k)[mine])
        threshold = getattr(args, "near_duplicate_cosine", None)
        rnd.near_duplicate = [s >= threshold for s in max_similarities(batch, neighbours)[mine]] if threshold else []


def make_records(rnd: Round, args, first_id: int) -> None:
    """One pool record per teacher output, with ids from ``first_id`` (this rank's range of the round)."""
    G, pos = args.num_generations, rnd.cand_pos
    rnd.records = []
    for i, (text, parse) in enumerate(zip(rnd.teacher_texts, rnd.parses, strict=True)):
        k = pos.get(i)
        vote = rnd.votes[k] if k is not None else None
        lengths = [c.num_tokens for c in rnd.student_completions[k * G : (k + 1) * G]] if k is not None else []
        rnd.records.append(ProblemRecord(
            id=first_id + i, problem=parse.problem or "", step=rnd.step, concepts=list(parse.concepts),
            legal=parse.ok,  # official: a teacher output that parses is legal, answered or not
            reason=parse.reason, reference_id=rnd.references[i // G].id,
            solve_rate=rnd.finite(vote.solve_rate) if vote else None,
            majority_answer=vote.majority if vote else None, n_valid_answers=vote.n_valid if vote else 0,
            mean_student_tokens=rnd.finite(float(np.mean(lengths))) if lengths else None,
            novelty=rnd.finite(rnd.novelty[k]) if k is not None else None,
            near_duplicate=bool(rnd.near_duplicate[k]) if k is not None and rnd.near_duplicate else False,
            teacher_output=None if parse.ok else text[:MAX_STORED_OUTPUT_CHARS],
        ))  # fmt: skip


def scored_student_tokens(record: ProblemRecord) -> float | None:
    """The mean student length the response-length reward sees: only problems with a solve rate have one (as the
    official code scores lengths of answered problems only)."""
    return record.mean_student_tokens if record.solve_rate is not None else None


def score(rnd: Round, args, teacher_rewards: list[Callable]) -> None:
    """Every teacher reward of every record, computed here once (TRL's teacher reward functions read them back from
    the rows), and the combined score of those with a solve rate."""
    records = rnd.records
    columns = {
        "role": [TEACHER] * len(records),
        "legal": [r.legal for r in records],
        "solve_rate": [r.solve_rate for r in records],
        "novelty": [r.novelty for r in records],
        "mean_student_tokens": [scored_student_tokens(r) for r in records],
        "near_duplicate": [r.near_duplicate for r in records],
        "label_confirmed": [r.label_confirmed for r in records],
    }
    for name, func in zip(TEACHER_REWARD_NAMES, teacher_rewards, strict=True):
        for r, value in zip(records, func(rnd.teacher_texts, **columns), strict=True):
            r.rewards[name] = rnd.finite(value, default=0.0)
    for r in records:
        if r.legal and r.solve_rate is not None:  # official: a combined score needs a solve rate
            r.combined_score = combined_score(r.rewards["solvability"], r.rewards["diversity"],
                                              args.difficulty_score_weight, args.diversity_score_weight)  # fmt: skip


def select_teacher_groups(records: list[ProblemRecord], n_groups: int, G: int, keep: int) -> list[int]:
    """The ``keep`` groups with the highest within-group variance of the combined score, in generation order."""
    if n_groups <= keep:
        return list(range(n_groups))
    variances = []
    for g in range(n_groups):
        values = [r.combined_score for r in records[g * G : (g + 1) * G] if r.combined_score is not None]
        variances.append(float(np.var(values)) if values else -1.0)  # -1: no legal problem in the group
    order = sorted(range(n_groups), key=lambda g: -variances[g])  # stable: ties keep generation order
    return sorted(order[:keep])


def select_student_problems(records: list[ProblemRecord], want: int, how: str, rng: np.random.Generator,
                            confirmed_only: bool = False) -> list[int]:  # fmt: skip
    """Record indices of the problems the student trains on, among legal problems with a solve rate (and, with
    ``confirmed_only``, a program-confirmed label): best combined score first (topped up at random), or at random."""
    legal = [i for i, r in enumerate(records) if r.legal and r.solve_rate is not None]
    if confirmed_only:
        legal = [i for i in legal if records[i].label_confirmed is True]
    if how == "random":
        return [int(i) for i in rng.permutation(legal)[:want]] if legal else []
    picked = sorted(legal, key=lambda i: -(records[i].combined_score or 0.0))[:want]
    rest = [i for i in legal if i not in picked]
    if len(picked) < want and rest:  # top up at random from the legal ones
        picked += [int(i) for i in rng.permutation(rest)[: want - len(picked)]]
    return picked


def select(rnd: Round, args, rng: np.random.Generator, confirmed_only: bool = False) -> None:
    """The trained teacher groups and student problems of this rank."""
    n_groups = len(rnd.references)
    rnd.teacher_groups = select_teacher_groups(rnd.records, n_groups, args.num_generations, args.num_teacher_groups)
    rnd.student_problems = select_student_problems(rnd.records, args.num_student_groups, args.student_selection,
                                                   rng, confirmed_only)  # fmt: skip


def grow(rnd: Round, args, pool: ProblemPool) -> None:
    """Append the round's records of every rank, in rank order, to the pool (the same on every rank); the legal ones
    chosen by the append strategy join it, near-duplicates excepted."""
    vectors_of = {rnd.records[i].id: rnd.embeddings[k] for k, i in enumerate(rnd.candidates)}
    gathered = all_ranks((rnd.records, vectors_of))
    rnd.round_records = [r for rank_records, _ in gathered for r in rank_records]
    vectors = {rid: v for _, rank_vectors in gathered for rid, v in rank_vectors.items()}
    legal = [r for r in rnd.round_records if r.legal]
    top = parse_append_strategy(args.pool_append_strategy)
    chosen = legal if top is None else sorted(legal, key=lambda r: -(r.combined_score or 0.0))[:top]
    chosen_ids = {r.id for r in chosen if not r.near_duplicate}  # near-duplicates stay out (near_duplicate_cosine)
    for r in rnd.round_records:
        r.in_pool = r.id in chosen_ids
    pool.add(rnd.round_records, {rid: vectors[rid] for rid in chosen_ids})
    rnd.pool_added = len(chosen_ids)
