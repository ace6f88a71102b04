"""Pseudo-label quality, measured live: the student's majority vote on a small labelled probe (GSM8K rows kept out
of every evaluation subset), as training votes on its own problems.

Self-play trains the student towards its own majority answer; nothing in the loop knows whether that answer is
right. Every ``probe_every`` steps the probe samples G answers per probe question with the rollout model at the
training settings, votes as training does, and logs how often the majority answer equals the gold answer, the
solve rate (the majority's share of valid answers), the valid-answer rate and the accuracy of single samples.

Every reading samples with common random numbers: sample j of probe row i always draws from the stream seeded by
(run seed, row, j), so two readings (steps of one run, or two runs with one seed) differ only where the policies do,
and a checkpoint is chosen on the policy's change rather than on sampling luck.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from opensir_lite.evaluation.benchmarks import Item, probe_items
from opensir_lite.generation import sequence_seed
from opensir_lite.grading import majority_vote
from opensir_lite.parsing import extract_answer, normalise_answer, verify_parsed
from opensir_lite.prompts import render, student_messages
from opensir_lite.sampling import Sampler, TransformersSampler, sampling_settings

PROBE_STREAM = 1  # the probe's key in sequence seeds (evaluation streams have none), so the two never coincide


class LabelProbe:
    """Called with (sampler, step) before a round; returns ``probe/...`` metrics on probe steps (the first step,
    every ``every`` steps, and ``last_step``), else an empty dict. The sampler is the round's
    (:mod:`opensir_lite.sampling`), so the probe reads the policy that samples the rounds; wrap a bare model in a
    :class:`opensir_lite.sampling.TransformersSampler` (:meth:`read_model`)."""

    def __init__(self, args, items: list[Item] | None = None, every: int | None = None, last_step: int | None = None):
        self.args = args
        self.items = items if items is not None else probe_items(rows=args.probe_rows)
        self.every = every if every is not None else args.probe_every
        self.last_step = last_step if last_step is not None else args.max_steps
        self.last_rows: list[dict[str, Any]] = []  # the last reading per probe row (answers, right, majority)

    def due(self, step: int) -> bool:
        return self.every > 0 and (step == 1 or step % self.every == 0 or step == self.last_step)

    def read_model(self, model, tokenizer, step: int, use_system_prompt: bool = True) -> dict[str, Any]:
        """The probe's reading of a transformers model in this process."""
        return self(TransformersSampler(model, tokenizer, self.args), step, use_system_prompt)

    def __call__(self, sample: Sampler, step: int, use_system_prompt: bool = True) -> dict[str, Any]:
        if not self.due(step):
            return {}
        a = self.args
        start = time.perf_counter()
        G = a.probe_samples or a.num_generations
        prompts = [render(sample.tokenizer, student_messages(it.question, use_system_prompt)) for it in self.items]
        seed = int(getattr(a, "seed", 0) or 0)
        outs = sample.generate(
            prompts, G, sampling_settings(a, "student"),
            sample_seeds=[sequence_seed(seed, PROBE_STREAM, it.index, j) for it in self.items for j in range(G)],
        )  # fmt: skip
        majority_right, rates, valid, sample_right = [], [], [], []
        self.last_rows = []
        for q, item in enumerate(self.items):
            answers = [extract_answer(c.text, a.answer_extraction) for c in outs[q * G : (q + 1) * G]]
            vote = majority_vote(answers, by=a.answer_vote)
            right = [ans is not None and verify_parsed(item.official_gold, normalise_answer(ans)) for ans in answers]
            first = next((i for i in range(G) if vote.agrees(i)), None)
            majority_right.append(float(first is not None and right[first]))
            if vote.solve_rate is not None:
                rates.append(vote.solve_rate)
            valid.append(vote.n_valid / G)
            sample_right.append(float(np.mean(right)))
            self.last_rows.append({"row": item.index, "answers": answers, "right": right, "majority": vote.majority,
                                   "solve_rate": vote.solve_rate, "majority_right": bool(majority_right[-1]),
                                   "tokens": [c.num_tokens for c in outs[q * G : (q + 1) * G]]})  # fmt: skip
        return {
            "probe/majority_correct": float(np.mean(majority_right)),
            "probe/solve_rate": float(np.mean(rates)) if rates else None,
            "probe/valid_rate": float(np.mean(valid)),
            "probe/sample_accuracy": float(np.mean(sample_right)),
            "probe/rows": len(self.items),
            "probe/tokens": sum(c.num_tokens for c in outs),
            "probe/truncated": float(np.mean([c.num_tokens >= a.student_max_new_tokens for c in outs]))
            if outs
            else 0.0,
            "time/probe": time.perf_counter() - start,
        }
