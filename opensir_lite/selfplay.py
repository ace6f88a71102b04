"""OpenSIR self-play as a round source: the pool, the embedder and the random streams, and one round played as a
linear sequence of the stages of :mod:`opensir_lite.round`.

A round: sample reference problems from the pool -> teacher prompts -> G teacher samples per prompt (``upscale``
times more groups than are trained) -> parse (a parsed problem is legal, as in the official code) -> G student
samples per legal problem -> answers, majority vote, solve rate (None when no student answer is valid) ->
embeddings and novelty -> records and the teacher rewards -> pick the teacher groups with the highest variance of
the combined score and the student problems with the best combined score among those with a solve rate -> pool
growth -> training rows, metrics, evidence (:mod:`opensir_lite.round_output`).
With ``program_check`` on, a measurement joins the round after grading: a program per legal problem, run in the
sandbox, its answer held against the majority (:mod:`opensir_lite.programs`; it changes no reward and no row).
With ``student_label: program_confirmed`` the same check is a filter: a problem's majority label counts as
confirmed when its program printed it; only confirmed problems earn solvability and train the student. With
``student_label: program_rule`` each answered problem gets the ``k`` sampled programs of its ``label_rule``
(:mod:`opensir_lite.label_rules`), which keeps, drops or changes the label.

On several processes (``accelerate launch``, ``torchrun``) every rank plays its share of the round: the references
come from one shared random stream (each rank takes its slice), novelty and near-duplicates are measured against
the same pool and the whole round's problems (gathered), and every rank appends the gathered problems to its pool
in rank order, so all ranks hold the same pool. Records get ids from disjoint per-rank ranges. Metrics and round
evidence describe the gathered round; only rank 0 writes files.

TRL reaches a source through :class:`opensir_lite.rollout.Rollout`, its one ``rollout_func`` adapter.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from opensir_lite import round as stages
from opensir_lite.distributed import all_ranks, rank_and_world
from opensir_lite.grading import Vote
from opensir_lite.label_rules import RULES_BY_NAME, LabelRule, apply_rule
from opensir_lite.parsing import parse_teacher_output
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.programs import check_problems
from opensir_lite.prompts import EXAMPLE_REPLY, SEED_PROBLEM, supports_system_prompt
from opensir_lite.rewards import in_gate, make_teacher_rewards
from opensir_lite.round import Round
from opensir_lite.round_output import batch, evidence, metrics
from opensir_lite.sampling import ProgressSampler, Sampler, TransformersSampler, sampling_settings

logger = logging.getLogger(__name__)


class SelfPlay:
    """The self-play round source. ``args`` is the run configuration (:class:`opensir_lite.config.SelfPlayConfig`
    or any object with the same attributes); ``embedder`` maps texts to unit vectors."""

    rows_kind = "selfplay"

    def __init__(self, args, pool: ProblemPool, embedder: Callable[[list[str]], np.ndarray]):
        self.args = args
        self.pool = pool
        self.embedder = embedder
        self.rng = np.random.default_rng(args.seed)  # shared: every rank draws the same references from it
        self.rank, self.world = rank_and_world()
        self.local_rng = np.random.default_rng([args.seed, 1 + self.rank])  # this rank's own choices
        self.teacher_rewards = make_teacher_rewards(
            lower=args.solve_rate_lower, upper=args.solve_rate_upper, num_generations=args.num_generations,
            length_cap=args.response_length_cap, length_baseline=args.response_length_baseline,
            format_credit=getattr(args, "teacher_format_credit", "official"),
        )  # fmt: skip
        self._evidence: list[dict[str, Any]] = []  # round evidence rows not yet written (take_evidence)
        self._example_vector: np.ndarray | None = None  # embedding of the worked example's problem

    @property
    def rows_per_round(self) -> int:
        a = self.args
        return (a.num_teacher_groups + a.num_student_groups) * a.num_generations

    # ---- checkpoint state and evidence --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs besides the pool to continue the same sampling streams (the shared one and each
        rank's own; a collective on several processes)."""
        return {"rng": self.rng.bit_generator.state, "local_rngs": all_ranks(self.local_rng.bit_generator.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        local = state.get("local_rngs") or []
        if self.rank < len(local):
            self.local_rng.bit_generator.state = local[self.rank]

    def take_evidence(self) -> list[dict[str, Any]]:
        """The round evidence rows played since the last call (the training callback appends them to
        ``round_evidence.jsonl``)."""
        rows, self._evidence = self._evidence, []
        return rows

    # ---- the round ----------------------------------------------------------------------------------------
    def play_round(self, model, tokenizer, step: int, use_system_prompt: bool | None = None,
                   progress: bool = False) -> Round:  # fmt: skip
        """One round sampled with a transformers model in this process (notebooks, benchmarks); ``progress`` shows
        the teacher's and the students' sampling as a progress bar."""
        if use_system_prompt is None:
            use_system_prompt = self.args.use_system_prompt
        if use_system_prompt is None:
            use_system_prompt = supports_system_prompt(tokenizer)
        sample = TransformersSampler(model, tokenizer, self.args)
        return self.play(ProgressSampler(sample) if progress else sample, step, use_system_prompt)

    def play(self, sample: Sampler, step: int, use_system_prompt: bool) -> Round:
        """One round, as a linear sequence of stages (see the module docstring)."""
        a = self.args
        t_start = time.perf_counter()
        rnd = Round(step=step)
        self._reseed_if_empty(rnd)
        n_groups = a.num_teacher_groups * a.teacher_upscale_ratio
        stages.draw(rnd, self.pool, n_groups, self.rng, self.rank, self.world)
        stages.propose(rnd, a, sample, use_system_prompt)
        stages.solve(rnd, sample, use_system_prompt)
        stages.grade(rnd, a)
        example = self._example_embedding if a.teacher_format_hint == "example" else None
        stages.novelty(rnd, a, self.pool, self.embedder, example, self.rank)
        stages.make_records(rnd, a, first_id=self.pool.next_id + self.rank * len(rnd.teacher_completions))
        program_stats = check_labels(rnd, a, sample, use_system_prompt) if runs_programs(a) else {}
        stages.score(rnd, a, self.teacher_rewards)
        stages.select(rnd, a, self.local_rng, confirmed_only=filters_labels(a))
        stages.grow(rnd, a, self.pool)
        batch(rnd, a, sample.tokenizer)
        rnd.times["rollout"] = time.perf_counter() - t_start
        metrics(rnd, a, self.pool).update(program_stats)
        cap = getattr(a, "evidence_completion_chars", 300)
        if cap is not None and cap >= 0:
            self._evidence.extend(row for rank_rows in all_ranks(evidence(rnd, a.num_generations, cap))
                                  for row in rank_rows)  # fmt: skip
        return rnd

    def _reseed_if_empty(self, rnd: Round) -> None:
        if len(self.pool) == 0:  # everything evicted (or an empty pool given): start again from the seed
            seed = getattr(self.args, "seed_problem", SEED_PROBLEM) or SEED_PROBLEM
            self.pool.add([ProblemRecord(id=self.pool.new_id(), problem=seed, step=rnd.step, in_pool=True,
                                         source="seed")])  # fmt: skip
            rnd.degenerate["empty_pool"] += 1
            logger.warning("the problem pool was empty; re-seeded it with %r", seed)

    def _example_embedding(self) -> np.ndarray:
        """The embedding of the worked example's problem (``teacher_format_hint: example``), computed once."""
        if self._example_vector is None:
            problem = parse_teacher_output(EXAMPLE_REPLY).problem
            self._example_vector = np.asarray(self.embedder([problem]), dtype=np.float32)
        return self._example_vector


# ---- the program check and the label filter --------------------------------------------------------------
def runs_programs(args) -> bool:
    """Whether rounds run the program check: as a measurement (``program_check``) or as the label filter."""
    return bool(getattr(args, "program_check", False)) or filters_labels(args)


def filters_labels(args) -> bool:
    """``student_label: program_confirmed`` or ``program_rule``: only kept labels train the student."""
    return getattr(args, "student_label", "majority") in ("program_confirmed", "program_rule")


def label_rule(args) -> LabelRule | None:
    """``student_label: program_rule``: the rule named by ``label_rule`` (:data:`opensir_lite.label_rules.RULES`)."""
    if getattr(args, "student_label", "majority") != "program_rule":
        return None
    return RULES_BY_NAME[args.label_rule]


def check_labels(rnd: Round, args, sample: Sampler, use_system_prompt: bool) -> dict[str, Any]:
    """The program check of the round's legal problems with a majority answer: the evidence fields per record id
    (``rnd.program_fields``) and the ``programs/...`` and ``labels/...`` stats of the gathered round. Under the
    label filter it sets each answered record's ``label_confirmed``: True when its program printed the majority;
    under ``program_rule`` when the rule keeps a label, which may be another answer class than the majority's (the
    round's vote, the record's majority answer and solve rate then follow the new label)."""
    pos, rule = rnd.cand_pos, label_rule(args)
    k = rule.k if rule is not None else 1
    floor = rule.min_rate if rule is not None and rule.min_rate is not None else -1.0  # below it: dropped unread
    items = [(r.id, r.problem, rnd.votes[pos[i]].majority, None) for i, r in enumerate(rnd.records)
             if r.legal and i in pos and rnd.votes[pos[i]].majority is not None
             and rnd.votes[pos[i]].solve_rate >= floor]  # fmt: skip
    t0 = time.perf_counter()
    checks = check_problems(None, sample.tokenizer, items, args.program_max_new_tokens, args.max_generate_batch,
                            bool(use_system_prompt), allow_unisolated=args.allow_unisolated_sandbox,
                            sample=sample.generate, num_programs=k,
                            sampling=sampling_settings(args, "program") if rule is not None else None)  # fmt: skip
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
    if rule is None:
        kept, changed = {c.id: c.agrees is True for c in checks}, set()
    else:
        kept, changed = apply_label_rule(rnd, args, rule, checks)
    stats.update(label_stats(rnd.records, kept, args, changed))
    first = {c.id: c for c in reversed(checks)}  # each problem's first program
    rnd.program_fields = {c.id: {"program_answer": c.program_answer, "program_agrees": c.agrees,
                                 "program_failure": c.failure, "program": c.program} for c in first.values()}  # fmt: skip
    for r in rnd.records:  # the filter's verdict, as label_stats set it on the record
        if r.id in rnd.program_fields and r.label_confirmed is not None:
            rnd.program_fields[r.id]["label_confirmed"] = r.label_confirmed
            if rule is not None:
                rnd.program_fields[r.id]["program_answers"] = [c.program_answer for c in checks if c.id == r.id]
                rnd.program_fields[r.id]["label_changed"] = r.id in changed
    return stats


def apply_label_rule(rnd: Round, args, rule: LabelRule, checks: list) -> tuple[dict[int, bool], set[int]]:
    """``rule`` over each answered problem's answers and its programs' answers: which labels it keeps (by record
    id) and which it changed (a problem under the rule's solve-rate floor is dropped without programs); a changed
    label becomes the round's vote (the students' accuracy reward follows it)
    and the record's majority answer and solve rate."""
    G, pos = args.num_generations, rnd.cand_pos
    programs: dict[int, list] = {}
    for c in checks:
        programs.setdefault(c.id, []).append(c.program_answer)
    kept, changed = {}, set()
    for i, r in enumerate(rnd.records):
        if i not in pos or r.solve_rate is None:
            continue
        if r.id not in programs and rule.k and (rule.min_rate is None or r.solve_rate >= rule.min_rate):
            continue  # no programs were asked for (no majority answer)
        q = pos[i]
        label = apply_rule(rule, rnd.answers[q * G : (q + 1) * G], programs.get(r.id, []), args.answer_vote)
        kept[r.id] = label.cls is not None
        if label.changed:
            vote = rnd.votes[q]
            count = vote.classes.count(label.cls)
            rnd.votes[q] = Vote(label.answer, count, vote.n_valid, vote.classes, label.cls)
            r.majority_answer, r.solve_rate = label.answer, rnd.finite(count / vote.n_valid)
            changed.add(r.id)
    return kept, changed


def label_stats(records: list[ProblemRecord], agrees: dict[int, bool], args, changed: set[int] = frozenset()
                ) -> dict[str, Any]:  # fmt: skip
    """How many answered problems of the (gathered) round a program confirmed (or the label rule kept), overall
    and inside the gate, and how many labels the rule changed; under the label filter, each answered record's
    ``label_confirmed`` is set here."""
    lower, upper = args.solve_rate_lower, args.solve_rate_upper
    answered = [r for r in records if r.legal and r.solve_rate is not None]
    if filters_labels(args):
        for r in answered:
            r.label_confirmed = agrees.get(r.id, False)
    gate = [r for r in answered if in_gate(r.solve_rate, lower, upper)]
    local = [len(answered), sum(agrees.get(r.id, False) for r in answered), len(gate),
             sum(agrees.get(r.id, False) for r in gate), sum(r.id in changed for r in answered)]  # fmt: skip
    n, confirmed, n_gate, confirmed_gate, n_changed = (int(v) for v in np.sum(all_ranks(local), axis=0))
    return {
        "labels/confirmed": confirmed,
        "labels/confirmed_share": confirmed / n if n else None,
        "labels/in_gate": n_gate,
        "labels/in_gate_confirmed_share": confirmed_gate / n_gate if n_gate else None,
        "labels/changed": n_changed,
    }
