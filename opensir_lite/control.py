"""The gold-label control of a self-play run: plain GRPO on labelled problems, a round source as self-play is (TRL
calls it through :class:`opensir_lite.rollout.Rollout`).

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
from typing import Any

import numpy as np

from opensir_lite.evaluation.benchmarks import Item
from opensir_lite.grading import majority_vote
from opensir_lite.parsing import extract_answer, normalise_answer, verify_parsed
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.prompts import render, student_messages
from opensir_lite.rewards import STUDENT
from opensir_lite.round import Round, timed
from opensir_lite.round_output import advantage_metrics, row_logprobs, student_advantage_stats, tail
from opensir_lite.sampling import Sampler, TransformersSampler


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
    """The gold-label control as a round source (the interface of :class:`opensir_lite.selfplay.SelfPlay`):
    ``pool``, ``play``, state and evidence, so the rollout adapter, the training callbacks and checkpoints treat
    both alike. Holds the labelled rows and the position in them."""

    def __init__(self, args, items: list[Item]):
        if not items:
            raise ValueError("the gold control needs labelled training rows")
        self.args = args
        self.items = items
        self.pool = ProblemPool()
        self.cursor = 0  # the next training row (rows are used in order, then again from the start)
        self._evidence: list[dict[str, Any]] = []

    @property
    def rows_per_round(self) -> int:
        return self.args.num_student_groups * self.args.num_generations

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = int(state.get("cursor", 0))

    def take_evidence(self) -> list[dict[str, Any]]:
        rows, self._evidence = self._evidence, []
        return rows

    def next_items(self) -> list[Item]:
        """The next ``gold_candidates`` rows (``num_student_groups`` when 0), in the training order."""
        n = max(self.args.num_student_groups, getattr(self.args, "gold_candidates", 0) or 0)
        picked = [self.items[(self.cursor + i) % len(self.items)] for i in range(n)]
        self.cursor += n
        return picked

    def play_round(self, model, tokenizer, step: int, use_system_prompt: bool = True) -> Round:
        """One round sampled with a transformers model in this process."""
        return self.play(TransformersSampler(model, tokenizer, self.args), step, use_system_prompt)

    def play(self, sample: Sampler, step: int, use_system_prompt: bool) -> Round:
        """Sample, grade against gold, record: the round with its stats and training rows."""
        a, G = self.args, self.args.num_generations
        t_start = time.perf_counter()
        rnd = Round(step=step)
        items = self.next_items()
        texts = [render(sample.tokenizer, student_messages(it.question, use_system_prompt)) for it in items]
        with timed(rnd, "student_generation"):
            rnd.student_completions = out = sample(texts, "student")
        with timed(rnd, "grading"):
            rnd.answers = answers = [extract_answer(c.text, a.answer_extraction) for c in out]
            correct: list[bool] = []
            for k, item in enumerate(items):
                correct += grade_against_gold(answers[k * G : (k + 1) * G], item)
                rnd.votes.append(majority_vote(answers[k * G : (k + 1) * G], by=a.answer_vote))
        accuracies, majority_right = self._records(rnd, items, correct)
        trained = trained_groups(accuracies, a.num_student_groups)
        self._rows(rnd, trained, correct)
        self._evidence_rows(rnd, items, correct, accuracies, trained)
        self.pool.add(rnd.records)
        rnd.times["rollout"] = time.perf_counter() - t_start
        rnd.stats = gold_stats(rnd, a, items, correct, accuracies, majority_right, trained, len(self.pool))
        return rnd

    def _records(self, rnd: Round, items: list[Item], correct: list[bool]) -> tuple[list[float], list[float]]:
        """One record per sampled problem (its accuracy as the solve rate); (accuracies, majority right)."""
        G, out = self.args.num_generations, rnd.student_completions
        accuracies, majority_right = [], []
        for k, (item, vote) in enumerate(zip(items, rnd.votes, strict=True)):
            group = rnd.group(k, G)
            accuracy = float(np.mean([correct[j] for j in group]))
            first = next((j for j in group if vote.agrees(j - k * G)), None)
            majority_right.append(float(first is not None and correct[first]))
            accuracies.append(accuracy)
            rnd.records.append(ProblemRecord(
                id=self.pool.next_id + k, problem=item.question, step=rnd.step, legal=True, in_pool=False,
                source="gold", reference_id=item.index, solve_rate=accuracy, majority_answer=vote.majority,
                n_valid_answers=vote.n_valid, mean_student_tokens=float(np.mean([out[j].num_tokens for j in group])),
            ))  # fmt: skip
        return accuracies, majority_right

    def _rows(self, rnd: Round, trained: list[int], correct: list[bool]) -> None:
        """The trained groups' rows (the "pool" of a control run: the labelled problems it trained on)."""
        G, out = self.args.num_generations, rnd.student_completions
        rows: dict[str, list] = {k: [] for k in ("prompt_ids", "completion_ids", "env_mask", "role", "correct",
                                                 "answer", "problem_id", "format_scored")}  # fmt: skip
        for k in trained:
            rnd.records[k].in_pool = True
            for j in rnd.group(k, G):
                rows["prompt_ids"].append(list(out[j].prompt_ids))
                rows["completion_ids"].append(list(out[j].completion_ids))
                rows["env_mask"].append([1] * len(out[j].completion_ids))
                rows["role"].append(STUDENT)
                rows["correct"].append(correct[j])
                rows["answer"].append(rnd.answers[j])
                rows["problem_id"].append(rnd.records[k].id)
        for record in rnd.records:
            if not record.in_pool:
                record.reason = "not_trained"  # sampled, but other candidates' accuracy varied
        rnd.advantages = student_advantage_stats(self.args, [float(c) for c in rows["correct"]],
                                                 [out[j].text for k in trained for j in rnd.group(k, G)])  # fmt: skip
        rows["format_scored"] = rnd.advantages.pop("format_scored")
        rnd.student_problems, rnd.rows = trained, rows
        trained_completions = [out[j] for k in trained for j in rnd.group(k, G)]
        rnd.logprobs = row_logprobs(trained_completions, [True] * len(trained_completions))

    def _evidence_rows(self, rnd, items, correct, accuracies, trained) -> None:
        """One evidence row per sampled problem: its students' answers and grades, accuracy and whether it trained."""
        cap = getattr(self.args, "evidence_completion_chars", 300)
        G, out = self.args.num_generations, rnd.student_completions
        if cap is None or cap < 0:
            return
        for k, (item, vote) in enumerate(zip(items, rnd.votes, strict=True)):
            students = [{"answer": rnd.answers[j], "correct": correct[j], "tokens": out[j].num_tokens,
                         **({"completion": tail(out[j].text, cap)} if cap > 0 else {})} for j in rnd.group(k, G)]  # fmt: skip
            self._evidence.append({"id": rnd.records[k].id, "step": rnd.step, "gold_row": item.index, "gold": item.gold,
                                   "students": students, "accuracy": accuracies[k], "trained": k in trained,
                                   "majority_answer": vote.majority})  # fmt: skip


def gold_stats(rnd: Round, a, items, correct, accuracies, majority_right, trained, pool_size: int) -> dict[str, Any]:
    """The control round's metrics, under the names self-play uses where they mean the same."""
    out = rnd.student_completions
    tokens = sum(c.num_tokens for c in out)
    entropies = [c.entropy for c in out if c.entropy is not None]
    valid = sum(v.n_valid for v in rnd.votes)
    t_student, t_grading, rollout = rnd.times["student_generation"], rnd.times["grading"], rnd.times["rollout"]
    return {
        "teacher_outputs": 0, "legal_problems": 0, "legal_ratio": None, "answered_problems": len(items),
        "solve_rate_mean": float(np.mean(accuracies)), "novelty_mean": None, "pool_size": pool_size,
        "teacher_tokens": 0, "student_tokens": tokens, "tokens_generated": tokens,
        "student_groups": len(trained), "filler_groups": 0,
        "gold/accuracy": float(np.mean(correct)) if correct else 0.0,
        "gold/majority_correct": float(np.mean(majority_right)),
        "gold/zero_variance_groups": sum(1 for acc in accuracies if acc in (0.0, 1.0)),
        "gold/candidates": len(items),
        "gold/trained_accuracy": float(np.mean([accuracies[k] for k in trained])) if trained else None,
        "gold/trained_variance_groups": sum(1 for k in trained if accuracies[k] not in (0.0, 1.0)),
        **advantage_metrics({**rnd.advantages, "student_entropy_sum": float(sum(entropies)),
                             "student_entropy_count": len(entropies)}),
        "student_valid_rate": valid / len(out) if out else None,
        "student_mean_tokens": tokens / len(out) if out else None,
        "student_truncated_share": float(np.mean([c.num_tokens >= a.student_max_new_tokens for c in out])),
        "time/teacher_generation": 0.0, "time/student_generation": t_student, "time/grading": t_grading,
        "time/embedding": 0.0, "time/rollout": rollout,
        "time/selfplay_other": max(0.0, rollout - t_student - t_grading),
    }  # fmt: skip
