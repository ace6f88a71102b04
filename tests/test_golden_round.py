"""The golden rounds: one self-play round and one gold-control round, played with a scripted sampler (no model
weights) and a deterministic embedder, recorded as TRL receives them: every row column, every reward function's
value on those rows, the advantages TRL computes from them, and the round's metrics. The engine may be rebuilt in any
shape; these rounds must come out the same.

Regenerate the record only for a deliberate change of behaviour: ``OPENSIR_UPDATE_GOLDEN=1 pytest
tests/test_golden_round.py`` (the diff of ``tests/fixtures/golden_round.json`` is then the change to review).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from opensir_lite.evaluation.benchmarks import Item
from opensir_lite.generation import Completion
from opensir_lite.pool import ProblemPool
from opensir_lite.rewards import make_gold_reward_funcs, make_reward_funcs

GOLDEN = Path(__file__).parent / "fixtures" / "golden_round.json"
G = 4

# The self-play round's teacher outputs (two groups of G: upscale 2) and each problem's G student answers.
TEACHER = [
    "<think>apples</think><problem>Tom has 3 boxes of 2 apples and eats 1. How many apples are left?</problem>"
    "<concepts>multiplication facts, subtraction</concepts>",
    "<think>pens</think><problem>A shelf holds 4 rows of 5 pens. How many pens are on the shelf?</problem>"
    "<concepts>multiplication facts</concepts>",
    "no tags at all: an illegal output",
    "<problem>Sam reads 6 pages a day for 3 days. How many pages does he read?</problem>"
    "<concepts>multiplication facts</concepts>",
    "<think>coins</think><problem>Mia has 9 coins and spends 4. How many coins does she keep?</problem>"
    "<concepts>subtraction facts</concepts>",
    "<think>x</think><problem>Mia has 9 coins and spends 4. How many coins does she keep?</problem>"
    "<concepts>subtraction facts</concepts>",
    "<think>t</think><problem>What is 1+1?</problem>",
    "<think>cars</think><problem>A car park has 7 rows of 8 cars. How many cars are parked?</problem>"
    "<concepts>multiplication facts</concepts>",
]
ANSWERS = {
    "Tom has": ["5", "5", "5", "6"],  # solve rate 0.75: in the gate
    "A shelf": ["20", "20", "20", "20"],  # 1.0: above the gate
    "Sam reads": ["18", "18", "9", None],  # 2 of 3 valid answers
    "Mia has": ["5", "5", "4", "4"],  # a tie
    "A car park": ["56", "54", "15", "56"],  # 0.5: the gate's lower end
}
GOLD_ITEMS = [
    Item(question="What is 6 times 7?", gold="42", index=11),  # two right of four: accuracy varies
    Item(question="What is 2 plus 2?", gold="4", index=12),  # all right: no accuracy variance
    Item(question="What is 9 minus 3?", gold="6", index=13),  # two right
]
GOLD_ANSWERS = {
    "6 times 7": ["42", "41", "42", None],
    "2 plus 2": ["4", "4", "4", "4"],
    "9 minus 3": ["6", "5", "6", "3"],
}


class Scripted:
    """A sampler (the interface of :mod:`opensir_lite.sampling`) that returns the scripted texts: teacher prompts
    (no scripted problem inside) get TEACHER in order, student prompts the answers of the problem they hold, one
    completion per answer."""

    def __init__(self, tokenizer, answers: dict[str, list[str | None]], teacher: list[str] | None = None):
        self.tokenizer, self.model, self.answers, self.teacher = tokenizer, None, answers, teacher

    def __call__(self, prompts: list[str], role: str) -> list[Completion]:
        out = []
        for k, prompt in enumerate(prompts):
            key = next((key for key in self.answers if key in prompt), None)
            if key is None:
                texts = self.teacher[k * G : (k + 1) * G]
            else:
                texts = [
                    "I do not know."
                    if a is None
                    else f"Step by step.\nTherefore, the final answer is: $\\boxed{{{a}}}$"
                    for a in self.answers[key]
                ]
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for j, text in enumerate(texts):
                out.append(Completion(ids, self.tokenizer(text, add_special_tokens=False)["input_ids"], text,
                                      entropy=0.1 * (1 + j)))  # fmt: skip
        return out


def hashed_embedder(texts: list[str]) -> np.ndarray:
    """A deterministic unit vector per text (the same on every machine)."""
    rows = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(16)
        rows.append(v / np.linalg.norm(v))
    return np.asarray(rows, dtype=np.float32)


def trl_advantages(rows: dict[str, list], funcs, weights: list[float], tokenizer) -> dict[str, list]:
    """What TRL computes from the rows: the completions decoded as it decodes them, each reward function's values,
    their weighted sum (a None counts 0, as TRL's nansum), and group-normalised advantages (scale_rewards="group")."""
    completions = tokenizer.batch_decode(rows["completion_ids"], skip_special_tokens=True)
    values = {f.__name__: f(completions, **{k: v for k, v in rows.items() if k not in ("prompt_ids",)}) for f in funcs}
    total = [sum(w * (v[i] if v[i] is not None else 0.0) for w, v in zip(weights, values.values(), strict=True))
             for i in range(len(completions))]  # fmt: skip
    adv = []
    for start in range(0, len(total), G):
        group = np.asarray(total[start : start + G], dtype=np.float64)
        adv += list((group - group.mean()) / (group.std(ddof=1) + 1e-4))
    return {"rewards": values, "advantages": [float(a) for a in adv]}


# Columns the rebuilt engine added to the rows: the four teacher rewards, computed once by the round (TRL's teacher
# reward functions read them; the recorded rewards below check their values).
ADDED_COLUMNS = ("teacher_rewards",)


def record(rows: dict[str, list], stats: dict, funcs, weights, tokenizer) -> dict:
    """The round as TRL receives it, without timings."""
    return {
        "rows": {k: v for k, v in rows.items() if k != "logprobs" and k not in ADDED_COLUMNS},
        **trl_advantages(rows, funcs, weights, tokenizer),
        "metrics": {k: v for k, v in sorted(stats.items()) if not k.startswith("time/")},
    }


def play_selfplay(tokenizer) -> dict:
    from test_selfplay import make_args

    from opensir_lite.selfplay import SelfPlay

    args = make_args(num_generations=G, teacher_upscale_ratio=2, num_student_groups=2, near_duplicate_cosine=0.95,
                     use_system_prompt=True, student_format_gate="accuracy_variance", scale_rewards="group",
                     student_reward_weights=[1.0, 0.1], teacher_reward_weights=[1.0, 1.0, 0.1, 1.0])  # fmt: skip
    pool = ProblemPool.from_seed()
    result = SelfPlay(args, pool, hashed_embedder).play(Scripted(tokenizer, ANSWERS, TEACHER), 1, True)
    funcs = make_reward_funcs()
    out = record(
        result.rows, result.stats, funcs, [*args.teacher_reward_weights, *args.student_reward_weights], tokenizer
    )
    out["pool"] = [[r.id, r.problem, r.in_pool, r.legal, r.reason] for r in pool.history]
    return out


def play_gold(tokenizer) -> dict:
    from test_selfplay import make_args

    from opensir_lite.control import GoldControl

    args = make_args(num_generations=G, num_student_groups=2, gold_candidates=3, use_system_prompt=True,
                     student_format_gate="accuracy_variance", scale_rewards="group",
                     student_reward_weights=[1.0, 0.1])  # fmt: skip
    rnd = GoldControl(args, GOLD_ITEMS).play(Scripted(tokenizer, GOLD_ANSWERS), 1, True)
    return record(rnd.rows, rnd.stats, make_gold_reward_funcs(), list(args.student_reward_weights), tokenizer)


def same(a, b, path="") -> list[str]:
    """Differences between two recorded values: exact for everything but floats (1e-9 relative: the embedder's
    float32 products may round differently on another CPU)."""
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            return [f"{path}: {a!r} != {b!r}"]
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in (same(a.get(k), b.get(k), f"{path}.{k}") if k in a and k in b
                                          else [f"{path}.{k}: only in one"])]  # fmt: skip
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in same(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_golden_rounds(tokenizer):
    played = json.loads(json.dumps({"selfplay": play_selfplay(tokenizer), "gold": play_gold(tokenizer)}))
    if os.environ.get("OPENSIR_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(played, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    differences = same(recorded, played)
    assert not differences, "\n".join(differences[:30])
    # the record is not trivial: both rounds train rows with advantages, and the self-play round has every kind
    assert any(abs(a) > 0.1 for a in recorded["selfplay"]["advantages"])
    assert any(abs(a) > 0.1 for a in recorded["gold"]["advantages"])
    roles = set(recorded["selfplay"]["rows"]["role"])
    assert roles == {"teacher", "student"} and recorded["selfplay"]["metrics"]["legal_problems"] >= 5


@pytest.mark.parametrize("vectors", [["a"], ["a", "b"]])
def test_hashed_embedder_is_deterministic(vectors):
    """The golden rounds' embedder: the same unit vectors every time."""
    first, second = hashed_embedder(vectors), hashed_embedder(vectors)
    assert np.array_equal(first, second) and np.allclose(np.linalg.norm(first, axis=1), 1.0)
