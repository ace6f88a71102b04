"""The gold-label control of a self-play run: plain GRPO on labelled problems, as TRL's ``rollout_func``.

Each round takes the next ``gold_candidates`` problems of a labelled training set (rows no evaluation subset and
no probe contains, :func:`opensir_lite.evaluation.training_items`), samples G student solutions for each with the
same prompt, sampler and budget as a self-play student, grades every answer against the gold one (``correct``,
read by the ``gold_accuracy`` reward) and trains ``num_student_groups`` of them: those whose accuracy varies
first (the only groups with a gold-reward advantage, as self-play trains the problems inside its gate), then the
rest in order. With ``gold_candidates`` 0 every sampled problem is trained. There is no teacher and no pool to grow: the "pool" of a
control run is the list of labelled problems it trained on, with their accuracy (so checkpoints, resume and the
run's files work as for self-play). Its steps are the yardstick of self-play's cost per generated token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from opensir_lite.evaluation.benchmarks import Item
from opensir_lite.generation import generate
from opensir_lite.grading import majority_vote
from opensir_lite.parsing import extract_answer, normalise_answer, verify_parsed
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.prompts import render, student_messages, supports_system_prompt
from opensir_lite.rewards import STUDENT
from opensir_lite.selfplay import _tail, advantage_metrics, sampling_settings, student_advantage_stats


def trained_groups(accuracies: list[float], n: int) -> list[int]:
    """Which of the sampled groups train: the first ``n`` whose accuracy varies (strictly between 0 and 1), then
    the others in sampling order until there are ``n``; returned in sampling order."""
    varied = [k for k, acc in enumerate(accuracies) if 0.0 < acc < 1.0]
    rest = [k for k in range(len(accuracies)) if k not in varied]
    return sorted((varied + rest)[:n])


def grade_against_gold(answers: list[str | None], item: Item) -> list[bool]:
    """Each answer compared with the item's gold answer, as the label probe grades (math-verify)."""
    return [a is not None and verify_parsed(item.official_gold, normalise_answer(a)) for a in answers]


class GoldControl:
    """Holds the labelled rows and the position in them; ``__call__`` is TRL's ``rollout_func``. The same hooks as
    :class:`opensir_lite.selfplay.SelfPlay` (``pool``, ``round_stats``, ``before_round``, ``rollout_model``, state
    and evidence), so the training callback and checkpoints treat both alike."""

    def __init__(self, args, items: list[Item], rollout_model: Callable[[Any], Any] | None = None):
        if not items:
            raise ValueError("the gold control needs labelled training rows")
        self.args = args
        self.items = items
        self.rollout_model = rollout_model
        self.before_round: Callable[..., dict[str, Any]] | None = None
        self.pool = ProblemPool()
        self.round_stats: list[dict[str, Any]] = []
        self.cursor = 0  # the next training row (rows are used in order, then again from the start)
        self._use_system_prompt: bool | None = args.use_system_prompt
        self._evidence: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "use_system_prompt": self._use_system_prompt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = int(state.get("cursor", 0))
        self._use_system_prompt = state.get("use_system_prompt", self._use_system_prompt)

    def take_evidence(self) -> list[dict[str, Any]]:
        rows, self._evidence = self._evidence, []
        return rows

    def next_items(self) -> list[Item]:
        """The next ``gold_candidates`` rows (``num_student_groups`` when 0), in the training order."""
        n = max(self.args.num_student_groups, getattr(self.args, "gold_candidates", 0) or 0)
        picked = [self.items[(self.cursor + i) % len(self.items)] for i in range(n)]
        self.cursor += n
        return picked

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        a, G = self.args, self.args.num_generations
        expected = a.num_student_groups * G
        if len(prompts) != expected:
            raise ValueError(f"rollout received {len(prompts)} rows but a control round makes {expected}")
        model = self.rollout_model(trainer) if self.rollout_model is not None else trainer.model
        tokenizer, step = trainer.processing_class, trainer.state.global_step + 1
        if self._use_system_prompt is None:
            self._use_system_prompt = supports_system_prompt(tokenizer)
        extra = self.before_round(model, tokenizer, step, self._use_system_prompt) if self.before_round else {}
        stats, rows = self.play_round(model, tokenizer, step)
        stats.update(extra)
        self.round_stats.append(stats)
        return {**rows, "logprobs": None}

    def play_round(self, model, tokenizer, step: int) -> tuple[dict[str, Any], dict[str, list]]:
        """Sample, grade against gold, record: the round's stats and training rows."""
        a, G = self.args, self.args.num_generations
        t_start = time.perf_counter()
        items = self.next_items()
        texts = [render(tokenizer, student_messages(it.question, self._use_system_prompt)) for it in items]
        t0 = time.perf_counter()
        out = generate(model, tokenizer, texts, G, sampling_settings(a, "student"), a.max_generate_batch,
                       max_prompt_tokens=a.max_prompt_length)  # fmt: skip
        t_student = time.perf_counter() - t0
        t0 = time.perf_counter()
        answers = [extract_answer(c.text, a.answer_extraction) for c in out]
        correct: list[bool] = []
        votes = []
        for k, item in enumerate(items):
            correct += grade_against_gold(answers[k * G : (k + 1) * G], item)
            votes.append(majority_vote(answers[k * G : (k + 1) * G], by=a.answer_vote))
        t_grading = time.perf_counter() - t0
        rows: dict[str, list] = {k: [] for k in ("prompt_ids", "completion_ids", "env_mask", "role", "correct",
                                                 "answer", "problem_id", "format_scored")}  # fmt: skip
        records, accuracies, majority_right = [], [], []
        for k, (item, vote) in enumerate(zip(items, votes, strict=True)):
            group = range(k * G, (k + 1) * G)
            accuracy = float(np.mean([correct[j] for j in group]))
            first = next((j for j in group if vote.agrees(j - k * G)), None)
            majority_right.append(float(first is not None and correct[first]))
            accuracies.append(accuracy)
            records.append(ProblemRecord(
                id=self.pool.next_id + k, problem=item.question, step=step, legal=True, in_pool=False, source="gold",
                reference_id=item.index, solve_rate=accuracy, majority_answer=vote.majority,
                n_valid_answers=vote.n_valid, mean_student_tokens=float(np.mean([out[j].num_tokens for j in group])),
            ))  # fmt: skip
        trained = trained_groups(accuracies, a.num_student_groups)
        for k in trained:
            records[k].in_pool = True  # the "pool" of a control run: the labelled problems it trained on
            for j in range(k * G, (k + 1) * G):
                rows["prompt_ids"].append(list(out[j].prompt_ids))
                rows["completion_ids"].append(list(out[j].completion_ids))
                rows["env_mask"].append([1] * len(out[j].completion_ids))
                rows["role"].append(STUDENT)
                rows["correct"].append(correct[j])
                rows["answer"].append(answers[j])
                rows["problem_id"].append(records[k].id)
        for record in records:
            if not record.in_pool:
                record.reason = "not_trained"  # sampled, but other candidates' accuracy varied
        adv = student_advantage_stats(
            a, [float(c) for c in rows["correct"]], [out[j].text for k in trained for j in range(k * G, (k + 1) * G)]
        )
        rows["format_scored"] = adv.pop("format_scored")
        cap = getattr(a, "evidence_completion_chars", 300)
        if cap is not None and cap >= 0:
            for k, (item, vote) in enumerate(zip(items, votes, strict=True)):
                group = range(k * G, (k + 1) * G)
                students = [{"answer": answers[j], "correct": correct[j], "tokens": out[j].num_tokens,
                             **({"completion": _tail(out[j].text, cap)} if cap > 0 else {})} for j in group]  # fmt: skip
                self._evidence.append({"id": records[k].id, "step": step, "gold_row": item.index, "gold": item.gold,
                                       "students": students, "accuracy": accuracies[k], "trained": k in trained,
                                       "majority_answer": vote.majority})  # fmt: skip
        self.pool.add(records)
        tokens = sum(c.num_tokens for c in out)
        entropies = [c.entropy for c in out if c.entropy is not None]
        valid = sum(v.n_valid for v in votes)
        rollout = time.perf_counter() - t_start
        stats: dict[str, Any] = {
            "teacher_outputs": 0, "legal_problems": 0, "legal_ratio": None, "answered_problems": len(items),
            "solve_rate_mean": float(np.mean(accuracies)), "novelty_mean": None, "pool_size": len(self.pool),
            "teacher_tokens": 0, "student_tokens": tokens, "tokens_generated": tokens,
            "student_groups": len(trained), "filler_groups": 0,
            "gold/accuracy": float(np.mean(correct)) if correct else 0.0,
            "gold/majority_correct": float(np.mean(majority_right)),
            "gold/zero_variance_groups": sum(1 for acc in accuracies if acc in (0.0, 1.0)),
            "gold/candidates": len(items),
            "gold/trained_accuracy": float(np.mean([accuracies[k] for k in trained])) if trained else None,
            "gold/trained_variance_groups": sum(1 for k in trained if accuracies[k] not in (0.0, 1.0)),
            **advantage_metrics({**adv, "student_entropy_sum": float(sum(entropies)),
                                 "student_entropy_count": len(entropies)}),
            "student_valid_rate": valid / len(out) if out else None,
            "student_mean_tokens": tokens / len(out) if out else None,
            "student_truncated_share": float(np.mean([c.num_tokens >= a.student_max_new_tokens for c in out])),
            "time/teacher_generation": 0.0, "time/student_generation": t_student, "time/grading": t_grading,
            "time/embedding": 0.0, "time/rollout": rollout,
            "time/selfplay_other": max(0.0, rollout - t_student - t_grading),
        }  # fmt: skip
        return stats, rows
