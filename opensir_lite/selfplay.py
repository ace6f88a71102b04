"""One OpenSIR self-play round, and the TRL ``rollout_func`` that runs it.

A round: sample reference problems from the pool -> teacher prompts -> G teacher samples per prompt (``upscale``
times more groups than are trained) -> parse (a parsed problem is legal, as in the official code) -> G student
samples per legal problem -> answers, majority vote, solve rate (None when no student answer is valid) ->
embeddings and novelty -> reward columns -> pick the teacher groups with the highest variance of the combined score
and the student problems with the best combined score among those with a solve rate -> pool growth -> training rows.
With ``program_check`` on, a measurement joins the round after grading: a program per legal problem, run in the
sandbox, its answer held against the majority (:mod:`opensir_lite.programs`; it changes no reward and no row).
With ``student_label: program_confirmed`` the same check is a filter: a problem's majority label counts as
confirmed when its program printed it; only confirmed problems earn solvability and train the student.

The rows go back to TRL's ``GRPOTrainer``: G consecutive rows form a group (teacher and student groups never mix),
``env_mask`` removes the ``<concepts>`` span of teacher completions (and whole filler rows) from the loss, and
the reward columns feed :mod:`opensir_lite.rewards`.

On several processes (``accelerate launch``, ``torchrun``) every rank plays its share of the round: the references
come from one shared random stream (each rank takes its slice), novelty and near-duplicates are measured against
the same pool and the whole round's problems (gathered), and every rank appends the gathered problems to its pool
in rank order, so all ranks hold the same pool. Records get ids from disjoint per-rank ranges. Metrics and round
evidence describe the gathered round; only rank 0 writes files.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opensir_lite.embedding import max_similarities, novelty_scores
from opensir_lite.generation import Completion, SamplingSettings, generate, generate_with_vllm
from opensir_lite.grading import Vote, majority_vote
from opensir_lite.parsing import (
    TeacherParse,
    extract_answer,
    find_concepts_span,
    has_final_answer_line,
    parse_teacher_output,
)
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.programs import check_problems
from opensir_lite.prompts import (
    EXAMPLE_REPLY,
    SEED_PROBLEM,
    render,
    student_messages,
    supports_system_prompt,
    teacher_messages,
)
from opensir_lite.rewards import (
    PAD,
    STUDENT,
    TEACHER,
    TEACHER_REWARD_NAMES,
    combined_score,
    finite_or_none,
    format_advantage_share,
    format_scored_column,
    in_gate,
    make_teacher_rewards,
)

logger = logging.getLogger(__name__)

SOLVE_RATE_BINS = 10  # histogram of solve rates over [0, 1] in metrics
APPEND_STRATEGIES = ("all_legal", "never")  # plus "top-<x>"
MAX_STORED_OUTPUT_CHARS = 1000  # raw teacher output kept for illegal problems (for inspection)


def parse_append_strategy(strategy: str) -> int | None:
    """None for ``all_legal``, 0 for ``never``, x for ``top-x``; ValueError otherwise."""
    if strategy == "all_legal":
        return None
    if strategy == "never":
        return 0
    if strategy.startswith("top-") and strategy[4:].isdigit() and int(strategy[4:]) > 0:
        return int(strategy[4:])
    raise ValueError(f"pool_append_strategy must be 'all_legal', 'never' or 'top-<x>', got {strategy!r}")


def concepts_loss_mask(tokenizer, completion_ids: list[int]) -> list[int]:
    """1 per completion token, 0 on tokens overlapping the ``<concepts>...</concepts>`` span (tags included)."""
    mask = [1] * len(completion_ids)
    text = tokenizer.decode(completion_ids, skip_special_tokens=True)
    span = find_concepts_span(text)
    if span is None:
        return mask

    def prefix_len(j: int) -> int:  # characters decoded from tokens [0, j]
        return len(tokenizer.decode(completion_ids[: j + 1], skip_special_tokens=True))

    def first_token_reaching(chars: int) -> int:  # first j with prefix_len(j) >= chars (binary search)
        lo, hi = 0, len(completion_ids) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if prefix_len(mid) >= chars:
                hi = mid
            else:
                lo = mid + 1
        return lo

    first = first_token_reaching(span[0] + 1)
    last = first_token_reaching(span[1])
    for j in range(first, last + 1):
        mask[j] = 0
    return mask


NEAR_DUPLICATE_COSINE = 0.95  # two problems whose embeddings are at least this similar count as one


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) unless torch.distributed is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_ranks(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` on one process); a collective: every rank must call it."""
    import torch.distributed as dist

    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    out[rank] = obj  # this rank's own objects, not a copy
    return out


def distinct_count(pool: ProblemPool, include_seed: bool = False, threshold: float = NEAR_DUPLICATE_COSINE) -> int:
    """Teacher-written problems in the pool after merging near-duplicates (embedding cosine >= ``threshold``),
    greedily in pool order; entries without a cached embedding count as distinct."""
    entries = [r for r in pool.entries if r.source == "teacher" or include_seed]
    vectors = [pool.embeddings.get(r.id) for r in entries]
    count = sum(v is None for v in vectors)
    known = np.array([v for v in vectors if v is not None], dtype=np.float64)
    if not len(known):
        return count
    known /= np.maximum(np.linalg.norm(known, axis=1, keepdims=True), 1e-10)
    sims = known @ known.T
    kept: list[int] = []
    for i in range(len(known)):
        if not kept or float(sims[i, kept].max()) < threshold:
            kept.append(i)
    return count + len(kept)


def student_advantage_stats(args, accuracy: list[float], texts: list[str]) -> dict[str, Any]:
    """For the trained student rows (consecutive groups of G): the ``format_scored`` column of the recipe's
    ``student_format_gate`` and how much of their |advantage| the format reward makes (TRL's group advantages
    with the recipe's student weights and ``scale_rewards``). Shared by self-play and the gold control."""
    G = args.num_generations
    scored = format_scored_column(accuracy, G, getattr(args, "student_format_gate", "none"))
    fmt = [float(has_final_answer_line(t)) if ok else None for t, ok in zip(texts, scored, strict=True)]
    weights = list(getattr(args, "student_reward_weights", [1.0, 0.1]))
    share = format_advantage_share(accuracy, fmt, G, weights, scale=getattr(args, "scale_rewards", "group") != "none")
    return {**share, "format_scored": scored}


def advantage_metrics(total: dict[str, Any]) -> dict[str, Any]:
    """Round metrics from the summed local numbers: the format share of the student |advantage|, the groups
    whose only variance is the format reward, and the student's mean sampling entropy."""
    whole = total["format_abs"] + total["accuracy_abs"]
    return {
        "advantage/format_share": total["format_abs"] / whole if whole > 1e-9 else None,
        "advantage/format_only_groups": total["format_only_groups"],
        "advantage/accuracy_variance_groups": total["accuracy_variance_groups"],
        "student_mean_entropy": (
            total["student_entropy_sum"] / total["student_entropy_count"] if total["student_entropy_count"] else None
        ),
    }


def sampling_settings(args, role: str) -> SamplingSettings:
    """The sampling of a role: its token budget, and the configuration's one temperature, top_p, top_k, min_p and
    repetition_penalty (TRL scores completions at ``args.temperature``, so rollouts sample at it too)."""
    return SamplingSettings(
        max_new_tokens=getattr(args, f"{role}_max_new_tokens"),
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k or 0,
        min_p=getattr(args, "min_p", None) or 0.0,
        repetition_penalty=getattr(args, "repetition_penalty", 1.0) or 1.0,
    )


def scored_student_tokens(record: ProblemRecord) -> float | None:
    """The mean student length the response-length reward sees: only problems with a solve rate have one (as the
    official code scores lengths of answered problems only)."""
    return record.mean_student_tokens if record.solve_rate is not None else None


def _tail(text: str, cap: int) -> str:
    """The last ``cap`` characters of a text, marked with a leading ellipsis when cut."""
    return text if len(text) <= cap else "…" + text[-cap:]


def round_evidence(records, teacher_out, student_out, votes, answers, cand_pos, G, cap, prefill="") -> list[dict]:
    """Why each legal problem scored what it did: the teacher output, its G student answers with their vote
    classes (and the last ``cap`` characters of each completion; none when ``cap`` is 0), the majority class, the
    solve rate, novelty and every teacher reward. One row per legal problem, keyed by the pool record id."""
    rows = []
    for i, r in enumerate(records):
        k = cand_pos.get(i)
        if not r.legal or k is None:
            continue
        vote = votes[k]
        students = []
        for j in range(k * G, (k + 1) * G):
            entry = {"answer": answers[j], "class": vote.classes[j - k * G], "tokens": student_out[j].num_tokens}
            if cap > 0:
                entry["completion"] = _tail(student_out[j].text, cap)
            students.append(entry)
        rows.append({
            "id": r.id, "step": r.step, "reference_id": r.reference_id,
            "teacher_output": _tail(prefill + teacher_out[i].text, max(cap, 0) * 4 or MAX_STORED_OUTPUT_CHARS),
            "students": students, "majority_class": vote.majority_class, "majority_answer": vote.majority,
            "solve_rate": r.solve_rate, "novelty": r.novelty, "rewards": dict(r.rewards),
            "combined_score": r.combined_score,
        })  # fmt: skip
    return rows


@dataclass
class RoundResult:
    """Everything one round produced: the records (one per teacher output), the rows to train on and stats."""

    records: list[ProblemRecord]
    rows: dict[str, list]
    stats: dict[str, Any]
    teacher_completions: list[Completion] = field(default_factory=list)
    student_completions: list[Completion] = field(default_factory=list)
    votes: list[Vote] = field(default_factory=list)


class SelfPlay:
    """Holds the pool, the embedder and the sampling RNG; ``__call__`` is TRL's ``rollout_func``.

    ``args`` is the run configuration (:class:`opensir_lite.config.SelfPlayConfig` or any object with the same
    attributes); ``embedder`` maps texts to unit vectors; ``rollout_model`` (optional) maps the trainer to the
    model that samples the round (default: the policy itself; :mod:`opensir_lite.training` passes a merged copy).
    """

    def __init__(
        self,
        args,
        pool: ProblemPool,
        embedder: Callable[[list[str]], np.ndarray],
        rollout_model: Callable[[Any], Any] | None = None,
    ):
        self.args = args
        self.pool = pool
        self.embedder = embedder
        self.rollout_model = rollout_model
        # Optional hook called before each round with (model, tokenizer, step, use_system_prompt); the dict it
        # returns joins the round's stats (the label probe of opensir_lite.probe).
        self.before_round: Callable[..., dict[str, Any]] | None = None
        self.rng = np.random.default_rng(args.seed)  # shared: every rank draws the same references from it
        self.rank, self.world = rank_and_world()
        self.local_rng = np.random.default_rng([args.seed, 1 + self.rank])  # this rank's own choices
        self.append_top = parse_append_strategy(args.pool_append_strategy)
        self.teacher_rewards = make_teacher_rewards(
            lower=args.solve_rate_lower,
            upper=args.solve_rate_upper,
            num_generations=args.num_generations,
            length_cap=args.response_length_cap,
            length_baseline=args.response_length_baseline,
            format_credit=getattr(args, "teacher_format_credit", "official"),
        )
        self.last_round: RoundResult | None = None
        self.round_stats: list[dict[str, Any]] = []  # stats of rounds not yet logged
        self._use_system_prompt: bool | None = args.use_system_prompt
        self._degenerate: Counter = Counter()  # degenerate events of the round being played
        self._example_vector: np.ndarray | None = None  # embedding of the worked example's problem
        self._evidence: list[dict[str, Any]] = []  # round evidence rows not yet written (take_evidence)
        self._trainer = None  # set by __call__ (TRL's rollout hook)
        self._student_advantages: dict[str, Any] = {}  # the trained student rows' advantage split (_build_rows)

    # ---- checkpoint state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs besides the pool to continue the same sampling streams (the shared one and each
        rank's own; a collective on several processes)."""
        local = all_ranks(self.local_rng.bit_generator.state)
        return {"rng": self.rng.bit_generator.state, "local_rngs": local, "use_system_prompt": self._use_system_prompt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        local = state.get("local_rngs") or []
        if self.rank < len(local):
            self.local_rng.bit_generator.state = local[self.rank]
        self._use_system_prompt = state.get("use_system_prompt", self._use_system_prompt)

    # ---- TRL hook -----------------------------------------------------------------------------------------
    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        expected = (self.args.num_teacher_groups + self.args.num_student_groups) * self.args.num_generations
        if len(prompts) != expected:
            raise ValueError(
                f"rollout received {len(prompts)} rows but a round makes {expected} "
                "((num_teacher_groups + num_student_groups) * num_generations) on each process; "
                "leave generation_batch_size and steps_per_generation unset"
            )
        self._trainer = trainer  # the vLLM backend samples through trainer.vllm_generation
        if self.rollout_model is not None:
            model = self.rollout_model(trainer)
        else:
            model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer, step = trainer.processing_class, trainer.state.global_step + 1
        extra = {}
        if self.before_round is not None:
            if self._use_system_prompt is None:
                self._use_system_prompt = supports_system_prompt(tokenizer)
            extra = self.before_round(model, tokenizer, step, self._use_system_prompt)
        result = self.play_round(model, tokenizer, step=step)
        result.stats.update(extra)
        return {**result.rows, "logprobs": None}  # HF generate gives no sampling logprobs; TRL then needs none

    # ---- the round ----------------------------------------------------------------------------------------
    def play_round(self, model, tokenizer, step: int) -> RoundResult:
        """One round, as a linear sequence of stages (see the module docstring)."""
        a, G = self.args, self.args.num_generations
        t_start = time.perf_counter()
        if self._use_system_prompt is None:
            self._use_system_prompt = supports_system_prompt(tokenizer)
        self._degenerate = Counter()
        self._reseed_if_empty(step)

        # Teacher: one reference per prompt, G samples per prompt, upscale x more groups than trained.
        n_groups = a.num_teacher_groups * a.teacher_upscale_ratio
        references, all_references = self._references(n_groups)
        prefill = a.teacher_prefill or ""
        teacher_texts = [
            render(tokenizer, teacher_messages(r.problem, self._use_system_prompt, a.teacher_format_hint)) + prefill
            for r in references
        ]
        t0 = time.perf_counter()
        teacher_out = self._generate(model, tokenizer, teacher_texts, "teacher")
        t_teacher = time.perf_counter() - t0
        parses: list[TeacherParse] = [parse_teacher_output(prefill + c.text) for c in teacher_out]
        candidates = [i for i, p in enumerate(parses) if p.ok]

        # Student: G samples for every legal (parsed) problem, in one batched call.
        student_texts = [
            render(tokenizer, student_messages(parses[i].problem, self._use_system_prompt)) for i in candidates
        ]
        t0 = time.perf_counter()
        student_out = self._generate(model, tokenizer, student_texts, "student")
        t_student = time.perf_counter() - t0

        # Grading: answers, majority vote, solve rate (None when no answer is valid).
        t0 = time.perf_counter()
        answers = [extract_answer(c.text, a.answer_extraction) for c in student_out]
        votes = [majority_vote(answers[k * G : (k + 1) * G], by=a.answer_vote) for k in range(len(candidates))]
        t_grading = time.perf_counter() - t0

        # Novelty and near-duplicates against the pool and every parsed problem of the (gathered) round.
        t0 = time.perf_counter()
        cand_emb, novelty, duplicate = self._novelty([parses[i].problem for i in candidates], all_references)
        t_embedding = time.perf_counter() - t0

        # Records and teacher rewards, one per teacher output; selection; the pool grows by the gathered round.
        cand_pos = {i: k for k, i in enumerate(candidates)}
        records = self._records(step, references, teacher_out, parses, cand_pos, student_out, votes, novelty,
                                duplicate, prefill)  # fmt: skip
        program_fields, program_stats = self._program_check(model, tokenizer, records, votes, cand_pos)
        self._score_teacher(records, teacher_out, prefill)
        teacher_groups = self._select_teacher_groups(records, n_groups)
        student_problems = self._select_student_problems(records)
        round_records, added = self._grow_pool(records, candidates, cand_emb)

        rows = self._build_rows(
            tokenizer, teacher_out, student_out, records, votes, answers, teacher_groups, student_problems, cand_pos
        )
        times = {"teacher_generation": t_teacher, "student_generation": t_student, "grading": t_grading,
                 "embedding": t_embedding, "rollout": time.perf_counter() - t_start}  # fmt: skip
        stats = self._stats(round_records, self._local_numbers(teacher_out, student_out, records, teacher_groups,
                                                                student_problems, times), added)  # fmt: skip
        stats.update(program_stats)
        cap = getattr(a, "evidence_completion_chars", 300)
        if cap is not None and cap >= 0:
            evidence = round_evidence(records, teacher_out, student_out, votes, answers, cand_pos, G, cap, prefill)
            for row in evidence:
                row.update(program_fields.get(row["id"], {}))
            self._evidence.extend(row for rank_rows in all_ranks(evidence) for row in rank_rows)
        result = RoundResult(records, rows, stats, teacher_out, student_out, votes)
        self.last_round = result
        self.round_stats.append(stats)
        return result

    # ---- stages -------------------------------------------------------------------------------------------
    def _reseed_if_empty(self, step: int) -> None:
        if len(self.pool) == 0:  # everything evicted (or an empty pool given): start again from the seed
            seed = getattr(self.args, "seed_problem", SEED_PROBLEM) or SEED_PROBLEM
            self.pool.add([ProblemRecord(id=self.pool.new_id(), problem=seed, step=step, in_pool=True, source="seed")])
            self._degenerate["empty_pool"] += 1
            logger.warning("the problem pool was empty; re-seeded it with %r", seed)

    def _references(self, n_groups: int) -> tuple[list[ProblemRecord], list[ProblemRecord]]:
        """(this rank's references, every rank's): drawn from the shared stream, each rank taking its slice."""
        everyone = self.pool.sample_references(n_groups * self.world, self.rng)
        return everyone[self.rank * n_groups : (self.rank + 1) * n_groups], everyone

    def _novelty(self, problems: list[str], all_references) -> tuple[np.ndarray, list[float], list[bool]]:
        """(embeddings of this rank's problems, their novelty, near-duplicate flags), each problem measured
        against the pool (or its newest entries plus the round's references), the worked example when it is
        shown, and the other parsed problems of the whole round."""
        a = self.args
        self.pool.ensure_embeddings(self.embedder)
        local = self.embedder(problems) if problems else np.zeros((0, 0), dtype=np.float32)
        gathered = all_ranks(local)
        offset = sum(e.shape[0] if e.size else 0 for e in gathered[: self.rank])
        present = [e for e in gathered if e.size]
        batch = np.concatenate(present) if present else np.zeros((0, 0), dtype=np.float32)
        neighbours = self.pool.embedding_matrix(self.pool.diversity_ids(a.diversity_recent_pool_size,
                                                                        [r.id for r in all_references]))  # fmt: skip
        if batch.size and a.teacher_format_hint == "example":  # the worked example is in every prompt: not novel
            hint = self._example_embedding()
            neighbours = np.concatenate([neighbours, hint]) if neighbours.size else hint
        mine = slice(offset, offset + len(problems))
        novelty = novelty_scores(batch, neighbours, a.novelty_top_k)[mine]
        threshold = getattr(a, "near_duplicate_cosine", None)
        duplicate = [s >= threshold for s in max_similarities(batch, neighbours)[mine]] if threshold else []
        return local, novelty, duplicate

    def _records(self, step, references, teacher_out, parses, cand_pos, student_out, votes, novelty, duplicate,
                 prefill) -> list[ProblemRecord]:  # fmt: skip
        """One record per teacher output, with ids from this rank's range of the round."""
        G = self.args.num_generations
        first_id = self.pool.next_id + self.rank * len(teacher_out)
        records = []
        for i, (completion, parse) in enumerate(zip(teacher_out, parses, strict=True)):
            k = cand_pos.get(i)
            vote = votes[k] if k is not None else None
            legal = parse.ok  # official: a teacher output that parses is legal, answered or not
            lengths = [c.num_tokens for c in student_out[k * G : (k + 1) * G]] if k is not None else []
            records.append(
                ProblemRecord(
                    id=first_id + i,
                    problem=parse.problem or "",
                    step=step,
                    concepts=list(parse.concepts),
                    legal=legal,
                    reason=parse.reason,
                    reference_id=references[i // G].id,
                    solve_rate=self._finite(vote.solve_rate) if vote else None,
                    majority_answer=vote.majority if vote else None,
                    n_valid_answers=vote.n_valid if vote else 0,
                    mean_student_tokens=self._finite(float(np.mean(lengths))) if lengths else None,
                    novelty=self._finite(novelty[k]) if k is not None else None,
                    near_duplicate=bool(duplicate[k]) if k is not None and duplicate else False,
                    teacher_output=None if legal else (prefill + completion.text)[:MAX_STORED_OUTPUT_CHARS],
                )
            )
        return records

    def _score_teacher(self, records: list[ProblemRecord], teacher_out, prefill: str) -> None:
        """Every teacher reward of every record, and the combined score of those with a solve rate."""
        a = self.args
        columns = {
            "role": [TEACHER] * len(records),
            "legal": [r.legal for r in records],
            "solve_rate": [r.solve_rate for r in records],
            "novelty": [r.novelty for r in records],
            "mean_student_tokens": [scored_student_tokens(r) for r in records],
            "teacher_prefill": [prefill] * len(records),
            "near_duplicate": [r.near_duplicate for r in records],
            "label_confirmed": [r.label_confirmed for r in records],
        }
        texts = [c.text for c in teacher_out]
        for name, func in zip(TEACHER_REWARD_NAMES, self.teacher_rewards, strict=True):
            for r, value in zip(records, func(texts, **columns), strict=True):
                r.rewards[name] = self._finite(value, default=0.0)
        for r in records:
            if r.legal and r.solve_rate is not None:  # official: a combined score needs a solve rate
                r.combined_score = combined_score(
                    r.rewards["solvability"], r.rewards["diversity"], a.difficulty_score_weight,
                    a.diversity_score_weight,
                )  # fmt: skip

    @property
    def filters_labels(self) -> bool:
        """``student_label: program_confirmed``: only program-confirmed majority labels train the student."""
        return getattr(self.args, "student_label", "majority") == "program_confirmed"

    def _program_check(self, model, tokenizer, records, votes, cand_pos) -> tuple[dict[int, dict], dict[str, Any]]:
        """The program check of the round's legal problems with a majority answer (``program_check``, or the
        label filter): per record id the evidence fields, and the ``programs/...`` and ``labels/...`` stats of the
        gathered round ({} and {} when neither is on). Under the filter it sets each answered record's
        ``label_confirmed``: True when its program printed the majority answer, else False."""
        a = self.args
        if not (getattr(a, "program_check", False) or self.filters_labels):
            return {}, {}
        items = [(r.id, r.problem, votes[cand_pos[i]].majority, None) for i, r in enumerate(records)
                 if r.legal and i in cand_pos and votes[cand_pos[i]].majority is not None]  # fmt: skip
        t0 = time.perf_counter()
        checks = check_problems(
            model, tokenizer, items, a.program_max_new_tokens, a.max_generate_batch, bool(self._use_system_prompt),
            allow_unisolated=a.allow_unisolated_sandbox,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        local = [len(checks), sum(c.agrees is not None for c in checks), sum(c.agrees is True for c in checks),
                 sum(c.failure is not None for c in checks), sum(c.tokens for c in checks)]  # fmt: skip
        n, both, agree, failed, tokens = (int(v) for v in np.sum(all_ranks(local), axis=0))
        failures: Counter = Counter()
        for rank_failures in all_ranks(dict(Counter(c.failure for c in checks if c.failure))):
            failures.update(rank_failures)
        stats: dict[str, Any] = {
            "programs/checked": n,
            "programs/agreement": agree / both if both else None,
            "programs/failure_rate": failed / n if n else None,
            "programs/tokens": tokens,
            "time/programs": seconds,
            **{f"programs/failure/{k}": v for k, v in sorted(failures.items())},
        }
        stats.update(self._label_stats(records, {c.id: c.agrees is True for c in checks}))
        fields = {c.id: {"program_answer": c.program_answer, "program_agrees": c.agrees,
                         "program_failure": c.failure, "program": c.program} for c in checks}  # fmt: skip
        for r in records:  # the filter's verdict, as _label_stats set it on the record
            if r.id in fields and r.label_confirmed is not None:
                fields[r.id]["label_confirmed"] = r.label_confirmed
        return fields, stats

    def _label_stats(self, records: list[ProblemRecord], agrees: dict[int, bool]) -> dict[str, Any]:
        """How many answered problems of the (gathered) round a program confirmed, overall and inside the gate;
        under the label filter, each answered record's ``label_confirmed`` is set here."""
        lower, upper = self.args.solve_rate_lower, self.args.solve_rate_upper
        answered = [r for r in records if r.legal and r.solve_rate is not None]
        if self.filters_labels:
            for r in answered:
                r.label_confirmed = agrees.get(r.id, False)
        gate = [r for r in answered if in_gate(r.solve_rate, lower, upper)]
        local = [len(answered), sum(agrees.get(r.id, False) for r in answered), len(gate),
                 sum(agrees.get(r.id, False) for r in gate)]  # fmt: skip
        n, confirmed, n_gate, confirmed_gate = (int(v) for v in np.sum(all_ranks(local), axis=0))
        return {
            "labels/confirmed": confirmed,
            "labels/confirmed_share": confirmed / n if n else None,
            "labels/in_gate": n_gate,
            "labels/in_gate_confirmed_share": confirmed_gate / n_gate if n_gate else None,
        }

    def take_evidence(self) -> list[dict[str, Any]]:
        """The round evidence rows played since the last call (the training callback appends them to
        ``round_evidence.jsonl``)."""
        rows, self._evidence = self._evidence, []
        return rows

    def _example_embedding(self) -> np.ndarray:
        """The embedding of the worked example's problem (``teacher_format_hint: example``), computed once."""
        if getattr(self, "_example_vector", None) is None:
            problem = parse_teacher_output(EXAMPLE_REPLY).problem
            self._example_vector = np.asarray(self.embedder([problem]), dtype=np.float32)
        return self._example_vector

    def _finite(self, value: object, default: float | None = None) -> float | None:
        """A finite float, or ``default`` with the event counted (``degenerate/nonfinite_value``)."""
        x = finite_or_none(value)
        if x is None and value is not None:
            self._degenerate["nonfinite_value"] += 1
            return default
        return default if x is None else x

    def _sampling(self, role: str) -> SamplingSettings:
        return sampling_settings(self.args, role)

    def _generate(self, model, tokenizer, texts: list[str], role: str) -> list[Completion]:
        a = self.args
        if getattr(a, "generation_backend", "transformers") == "vllm":
            if not any(all_ranks(len(texts))):  # a collective in server mode: skip it together when nobody asks
                return []
            return generate_with_vllm(
                self._trainer.vllm_generation, tokenizer, texts, a.num_generations, self._sampling(role),
                max_prompt_tokens=getattr(a, "max_prompt_length", None),
            )  # fmt: skip
        return generate(
            model, tokenizer, texts, a.num_generations, self._sampling(role), a.max_generate_batch,
            max_prompt_tokens=getattr(a, "max_prompt_length", None),
        )  # fmt: skip

    # ---- selection and growth -----------------------------------------------------------------------------
    def _select_teacher_groups(self, records: list[ProblemRecord], n_groups: int) -> list[int]:
        """The ``num_teacher_groups`` groups with the highest within-group variance of the combined score."""
        G, keep = self.args.num_generations, self.args.num_teacher_groups
        if n_groups <= keep:
            return list(range(n_groups))
        variances = []
        for g in range(n_groups):
            values = [r.combined_score for r in records[g * G : (g + 1) * G] if r.combined_score is not None]
            variances.append(float(np.var(values)) if values else -1.0)  # -1: no legal problem in the group
        order = sorted(range(n_groups), key=lambda g: -variances[g])  # stable: ties keep generation order
        return sorted(order[:keep])

    def _select_student_problems(self, records: list[ProblemRecord]) -> list[int]:
        """Record indices of the problems the student trains on, among legal problems with at least one valid
        answer (a solve rate): best combined score first, or at random."""
        legal = [i for i, r in enumerate(records) if r.legal and r.solve_rate is not None]
        if self.filters_labels:  # only labels a program confirmed
            legal = [i for i in legal if records[i].label_confirmed is True]
        want = self.args.num_student_groups
        if self.args.student_selection == "random":
            picked = list(self.local_rng.permutation(legal)[:want]) if legal else []
            return [int(i) for i in picked]
        ranked = sorted(legal, key=lambda i: -(records[i].combined_score or 0.0))
        picked = ranked[:want]
        rest = [i for i in legal if i not in picked]
        if len(picked) < want and rest:  # top up at random from the legal ones
            picked += [int(i) for i in self.local_rng.permutation(rest)[: want - len(picked)]]
        return picked

    def _grow_pool(
        self, records: list[ProblemRecord], candidates: list[int], cand_emb: np.ndarray
    ) -> tuple[list[ProblemRecord], int]:
        """Append the round's records of every rank, in rank order, to the pool (the same on every rank); the
        legal ones chosen by the append strategy join it, near-duplicates excepted. Returns (the round's records
        of all ranks, the number that joined)."""
        gathered = all_ranks((records, {records[i].id: cand_emb[k] for k, i in enumerate(candidates)}))
        round_records = [r for rank_records, _ in gathered for r in rank_records]
        vectors = {rid: v for _, rank_vectors in gathered for rid, v in rank_vectors.items()}
        legal = [r for r in round_records if r.legal]
        if self.append_top is None:
            chosen = legal
        else:
            chosen = sorted(legal, key=lambda r: -(r.combined_score or 0.0))[: self.append_top]
        chosen_ids = {r.id for r in chosen if not r.near_duplicate}  # near-duplicates stay out (near_duplicate_cosine)
        for r in round_records:
            r.in_pool = r.id in chosen_ids
        self.pool.add(round_records, {rid: vectors[rid] for rid in chosen_ids})
        return round_records, len(chosen_ids)

    # ---- rows for TRL -------------------------------------------------------------------------------------
    def _build_rows(
        self, tokenizer, teacher_out, student_out, records, votes, answers, teacher_groups, student_problems, cand_pos
    ) -> dict[str, list]:
        G = self.args.num_generations
        rows: dict[str, list] = {
            k: []
            for k in ("prompt_ids", "completion_ids", "env_mask", "role", "legal", "solve_rate", "novelty",
                      "mean_student_tokens", "answer", "majority_answer", "in_majority", "problem_id",
                      "teacher_prefill", "near_duplicate", "label_confirmed", "format_scored")
        }  # fmt: skip

        def add(prompt_ids, completion_ids, env_mask, role, record, answer=None, majority=None, in_majority=None):
            rows["prompt_ids"].append(list(prompt_ids))
            rows["completion_ids"].append(list(completion_ids))
            rows["env_mask"].append(env_mask)
            rows["role"].append(role)
            rows["legal"].append(record.legal)
            rows["solve_rate"].append(record.solve_rate)
            rows["novelty"].append(record.novelty)
            rows["mean_student_tokens"].append(scored_student_tokens(record))
            rows["answer"].append(answer)
            rows["majority_answer"].append(majority)
            rows["in_majority"].append(in_majority)
            rows["problem_id"].append(record.id)
            rows["near_duplicate"].append(record.near_duplicate)
            rows["label_confirmed"].append(record.label_confirmed)
            rows["teacher_prefill"].append(self.args.teacher_prefill or "")
            rows["format_scored"].append(True)

        for g in teacher_groups:
            for i in range(g * G, (g + 1) * G):
                c = teacher_out[i]
                add(
                    c.prompt_ids, c.completion_ids, concepts_loss_mask(tokenizer, c.completion_ids), TEACHER, records[i]
                )
        first_student = len(rows["role"])
        for i in student_problems:
            k = cand_pos[i]
            for j in range(k * G, (k + 1) * G):
                c = student_out[j]
                add(c.prompt_ids, c.completion_ids, [1] * len(c.completion_ids), STUDENT, records[i],
                    answer=answers[j], majority=votes[k].majority, in_majority=votes[k].agrees(j - k * G))  # fmt: skip
        self._student_advantages = student_advantage_stats(
            self.args, [float(bool(v)) for v in rows["in_majority"][first_student:]],
            [student_out[j].text for i in student_problems for j in range(cand_pos[i] * G, (cand_pos[i] + 1) * G)],
        )  # fmt: skip
        rows["format_scored"][first_student:] = self._student_advantages.pop("format_scored")
        # Filler groups when fewer legal problems than student groups: zero loss weight, every reward None.
        filler = teacher_out[teacher_groups[0] * G]
        for _ in range(self.args.num_student_groups - len(student_problems)):
            for _ in range(G):
                add(filler.prompt_ids, filler.completion_ids, [0] * len(filler.completion_ids), PAD,
                    records[teacher_groups[0] * G])  # fmt: skip
        return rows

    # ---- statistics ---------------------------------------------------------------------------------------
    def _local_numbers(self, teacher_out, student_out, records, teacher_groups, student_problems, times) -> dict:
        """What only this rank knows (token counts, trained groups, timings), summed over ranks by _stats."""
        G = self.args.num_generations
        zero_var = 0
        for g in teacher_groups:
            values = [records[i].combined_score or 0.0 for i in range(g * G, (g + 1) * G)]
            zero_var += int(np.var(values) == 0.0)
        entropies = [c.entropy for c in student_out if c.entropy is not None]
        adv = getattr(self, "_student_advantages", None) or {}
        return {
            "format_abs": adv.get("format_abs", 0.0),
            "accuracy_abs": adv.get("accuracy_abs", 0.0),
            "format_only_groups": adv.get("format_only_groups", 0),
            "accuracy_variance_groups": adv.get("accuracy_variance_groups", 0),
            "student_entropy_sum": float(sum(entropies)),
            "student_entropy_count": len(entropies),
            "teacher_tokens": sum(c.num_tokens for c in teacher_out),
            "student_tokens": sum(c.num_tokens for c in student_out),
            "teacher_sequences": len(teacher_out),
            "student_sequences": len(student_out),
            "teacher_groups": len(teacher_groups),
            "student_groups": len(student_problems),
            "filler_groups": self.args.num_student_groups - len(student_problems),
            "zero_variance_teacher_groups": zero_var,
            "nonfinite_value": self._degenerate["nonfinite_value"],
            "times": times,
        }

    def _stats(self, records: list[ProblemRecord], local: dict[str, Any], added: int) -> dict[str, Any]:
        """The round's metrics: record statistics over the whole (gathered) round, counts summed over ranks,
        times of the slowest rank."""
        ranks = all_ranks(local)
        total = {k: sum(r[k] for r in ranks) for k in local if k != "times"}
        times = {k: max(r["times"][k] for r in ranks) for k in local["times"]}
        legal = [r for r in records if r.legal]
        rates = [r.solve_rate for r in legal if r.solve_rate is not None]
        hist, _ = np.histogram(rates, bins=SOLVE_RATE_BINS, range=(0.0, 1.0))
        lower, upper = self.args.solve_rate_lower, self.args.solve_rate_upper
        reasons = Counter(r.reason for r in records if not r.legal)
        answered = [r for r in legal if r.solve_rate is not None]
        problems = Counter(r.problem.strip().lower() for r in legal)
        majorities = Counter(r.majority_answer for r in answered if r.majority_answer is not None)
        stats: dict[str, Any] = {
            "teacher_outputs": len(records),
            "parsed_problems": sum(1 for r in records if r.problem),
            "legal_problems": len(legal),
            "legal_ratio": len(legal) / len(records) if records else 0.0,
            "answered_problems": len(rates),
            "solve_rate_mean": float(np.mean(rates)) if rates else None,
            "solve_rate_hist": [int(x) for x in hist],
            "in_gate": sum(1 for s in rates if lower - 1e-9 <= s <= upper + 1e-9),
            "novelty_mean": float(np.mean([r.novelty for r in legal])) if legal else None,
            "pool_size": len(self.pool),
            "pool_added": added,
            "near_duplicates": sum(r.near_duplicate for r in legal),
            "teacher_tokens": total["teacher_tokens"],
            "student_tokens": total["student_tokens"],
            "student_groups": total["student_groups"],
            "filler_groups": total["filler_groups"],
            "zero_variance_teacher_groups": total["zero_variance_teacher_groups"],
            "degenerate/no_legal_problem": int(not legal),
            "degenerate/no_valid_answer": sum(1 for r in legal if r.solve_rate is None),
            "degenerate/all_answers_equal": sum(1 for r in legal if r.solve_rate == 1.0),
            "degenerate/all_teacher_groups_zero_variance": int(
                total["teacher_groups"] > 0 and total["zero_variance_teacher_groups"] == total["teacher_groups"]
            ),
            "degenerate/empty_pool": self._degenerate["empty_pool"],
            "degenerate/nonfinite_value": total["nonfinite_value"],
            # health: learning or reward hacking
            "student_valid_rate": (
                sum(r.n_valid_answers for r in legal) / total["student_sequences"]
                if total["student_sequences"]
                else None
            ),
            "in_gate_share": (
                sum(lower - 1e-9 <= r.solve_rate <= upper + 1e-9 for r in answered) / len(answered)
                if answered
                else None
            ),
            "teacher_mean_tokens": (
                total["teacher_tokens"] / total["teacher_sequences"] if total["teacher_sequences"] else None
            ),
            "student_mean_tokens": (
                total["student_tokens"] / total["student_sequences"] if total["student_sequences"] else None
            ),
            "legal_problem_mean_chars": float(np.mean([len(r.problem) for r in legal])) if legal else None,
            "round_distinct_problems": len(problems),
            "round_top_problem_share": max(problems.values()) / len(legal) if legal else None,
            "round_top_majority_share": max(majorities.values()) / len(answered) if majorities else None,
            "pool_distinct_problems": distinct_count(self.pool),
        }
        stats["tokens_generated"] = stats["teacher_tokens"] + stats["student_tokens"]
        stats.update(advantage_metrics(total))
        for reason, n in sorted(reasons.items()):
            stats[f"illegal/{reason}"] = n
        for name in TEACHER_REWARD_NAMES:
            stats[f"teacher_all/{name}"] = float(np.mean([r.rewards[name] for r in records])) if records else 0.0
        parts = ("teacher_generation", "student_generation", "grading", "embedding")
        times["selfplay_other"] = max(0.0, times["rollout"] - sum(times[p] for p in parts))
        for k, v in times.items():
            stats[f"time/{k}"] = v
        return stats
