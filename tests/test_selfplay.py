"""The self-play round: loss mask, group/problem selection, pool growth, and a whole round on a tiny model."""

from types import SimpleNamespace

import numpy as np
import pytest
from transformers import AutoModelForCausalLM

from opensir_lite.config import parse_append_strategy
from opensir_lite.pool import ProblemPool, ProblemRecord
from opensir_lite.rewards import PAD, STUDENT, TEACHER
from opensir_lite.round import Round, grow, select_student_problems, select_teacher_groups
from opensir_lite.round_output import concepts_loss_mask
from opensir_lite.selfplay import SelfPlay


def make_args(**overrides):
    args = dict(
        seed=0, num_generations=4, num_teacher_groups=1, num_student_groups=1, teacher_upscale_ratio=2,
        teacher_max_new_tokens=48, student_max_new_tokens=48, temperature=1.0, top_p=1.0, top_k=0, min_p=None,
        repetition_penalty=1.0, answer_extraction="latex", answer_vote="string", max_prompt_length=None, solve_rate_lower=0.5, solve_rate_upper=0.9, novelty_top_k=5,
        diversity_recent_pool_size=None, difficulty_score_weight=1.0, diversity_score_weight=1.0,
        response_length_cap=1000.0, response_length_baseline=1000.0, pool_append_strategy="all_legal",
        student_selection="top", use_system_prompt=None, max_generate_batch=0, teacher_format_hint="none",
        teacher_prefill="",
    )  # fmt: skip
    args.update(overrides)
    return SimpleNamespace(**args)


@pytest.mark.parametrize(
    "strategy,expected",
    [("all_legal", None), ("never", 0), ("top-3", 3)],  # the three OpenSIR strategies
)
def test_append_strategy(strategy, expected):
    assert parse_append_strategy(strategy) == expected


@pytest.mark.parametrize("bad", ["top-", "top-0", "some", "top-x"])
def test_bad_append_strategy(bad):
    with pytest.raises(ValueError):
        parse_append_strategy(bad)


def test_concepts_loss_mask(tokenizer):
    text = "<think>t</think><problem>What is 3+4?</problem><concepts>basic arithmetic</concepts>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    mask = concepts_loss_mask(tokenizer, ids)
    kept = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m], skip_special_tokens=True)
    masked = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m], skip_special_tokens=True)
    assert "concepts" not in kept and "arithmetic" not in kept  # the span is out of the loss
    assert "<concepts>basic arithmetic</concepts>" in masked
    # the rest stays (a token straddling the span edge, like "><", is masked with the span)
    assert kept.startswith("<think>t</think><problem>What is 3+4?</problem")
    assert mask[-1] == 1  # EOS stays in the loss
    no_tags = tokenizer("no tags at all", add_special_tokens=False)["input_ids"]
    assert concepts_loss_mask(tokenizer, no_tags) == [1] * len(no_tags)


def _records(scores):
    """Records with given combined scores (None = illegal); legal ones have a solve rate."""
    return [
        ProblemRecord(
            id=i, problem=f"p{i}", legal=s is not None, combined_score=s, solve_rate=None if s is None else 0.5
        )
        for i, s in enumerate(scores)
    ]


def test_teacher_groups_by_variance():
    # group 0: all illegal (-1); group 1: equal scores (var 0); group 2: spread -> chosen
    records = _records([None, None, None, None, 1.0, 1.0, 1.0, 1.0, 0.2, 1.2, None, 0.5])
    assert select_teacher_groups(records, 3, G=4, keep=1) == [2]
    assert select_teacher_groups(records, 3, G=4, keep=2) == [1, 2]  # tie between 0 and 1 is not needed: var 0 > -1


def test_student_problems_best_first():
    rng = np.random.default_rng(0)
    records = _records([0.3, None, 1.2, 0.9])
    assert select_student_problems(records, 2, "top", rng) == [2, 3]  # best combined scores
    assert sorted(select_student_problems(records, 5, "top", rng)) == [0, 2, 3]  # fewer legal ones than wanted


@pytest.mark.parametrize(
    "strategy,joined",
    [("all_legal", {0, 2, 3}), ("top-1", {2}), ("never", set())],  # which legal problems join the pool
)
def test_pool_growth(strategy, joined):
    pool = ProblemPool([ProblemRecord(id=100, problem="seed problem", in_pool=True)])
    records = _records([0.3, None, 1.2, 0.9])
    rnd = Round(step=1, records=records, candidates=[0, 1, 2, 3], embeddings=np.eye(4, dtype=np.float32))
    grow(rnd, make_args(pool_append_strategy=strategy), pool)
    assert rnd.round_records == records  # one process: the round is this rank's records
    assert {r.id for r in pool.entries} == joined | {100}
    assert rnd.pool_added == len(joined)
    assert set(pool.embeddings) == joined  # cached embeddings of the new entries


def test_round_on_fitted_model(fitted_model_dir, tokenizer, embedder):
    """A whole round: rows in groups, roles, masks, reward columns, records and pool growth."""
    import torch

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(fitted_model_dir)
    pool = ProblemPool.from_seed()
    sp = SelfPlay(make_args(), pool, embedder)
    result = sp.play_round(model, tokenizer, step=1)
    G = 4
    rows = result.rows
    assert len(rows["prompt_ids"]) == 2 * G  # (1 teacher + 1 student group) x G
    assert rows["role"][:G] == [TEACHER] * G
    assert rows["role"][G:] in ([STUDENT] * G, [PAD] * G)
    assert len(result.records) == 2 * G  # upscale 2: two teacher groups generated
    legal = [r for r in result.records if r.legal]
    assert legal, "the fitted model writes legal problems"
    assert all(r.novelty is not None for r in legal)
    assert all((r.solve_rate is None) == (r.n_valid_answers == 0) for r in legal)
    assert all(
        set(r.rewards) == {"solvability", "diversity", "teacher_format", "response_length"} for r in result.records
    )
    assert len(pool) == 1 + len(legal)  # all_legal growth
    assert all(r.id in pool.embeddings for r in pool.entries)  # embeddings cached
    for row in range(G):  # teacher rows: concepts masked out when present
        text = tokenizer.decode(rows["completion_ids"][row], skip_special_tokens=True)
        assert (0 in rows["env_mask"][row]) == ("</concepts>" in text and "<concepts>" in text)
    if rows["role"][G] == STUDENT:
        assert all(m == 1 for row in rows["env_mask"][G:] for m in row)
        assert rows["majority_answer"][G] is not None
    stats = result.stats
    assert stats["teacher_outputs"] == 2 * G and stats["legal_problems"] == len(legal)
    assert sum(stats["solve_rate_hist"]) == stats["answered_problems"] == sum(r.solve_rate is not None for r in legal)
    assert stats["tokens_generated"] == stats["teacher_tokens"] + stats["student_tokens"] > 0


def nan_embedder(texts):
    """An embedder gone wrong: NaN vectors for everything."""
    return np.full((len(texts), 8), np.nan, dtype=np.float32)


@pytest.mark.parametrize(
    "case",
    [
        "empty_pool",  # every entry evicted or given an empty pool: re-seeded and counted, the round goes on
        "nonfinite",  # NaN embeddings: novelty falls back, rewards stay finite
    ],
)
def test_degenerate_rounds_are_counted(case, fitted_model_dir, tokenizer, embedder):
    import math

    import torch

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(fitted_model_dir)
    pool = ProblemPool.from_seed()
    if case == "empty_pool":
        pool.history[0].in_pool = False
        assert len(pool) == 0
    sp = SelfPlay(make_args(), pool, nan_embedder if case == "nonfinite" else embedder)
    result = sp.play_round(model, tokenizer, step=1)
    stats = result.stats
    if case == "empty_pool":
        assert stats["degenerate/empty_pool"] == 1 and any(r.source == "seed" and r.in_pool for r in pool.history)
    for key in ("no_legal_problem", "no_valid_answer", "all_answers_equal", "all_teacher_groups_zero_variance",
                "empty_pool", "nonfinite_value"):  # fmt: skip
        assert isinstance(stats[f"degenerate/{key}"], int)
    assert all(math.isfinite(v) for r in result.records for v in r.rewards.values())
    assert all(r.novelty is None or math.isfinite(r.novelty) for r in result.records)


class FakeSampler:
    """A sampler (:mod:`opensir_lite.sampling`) over a generate-like stand-in ``fake(model, tokenizer, prompts, n,
    sampling)``: the round's logic, not the sampling, is under test."""

    def __init__(self, fake, tokenizer, args):
        self.fake, self.tokenizer, self.args, self.model = fake, tokenizer, args, None

    def generate(self, texts, num_samples, sampling, sample_seeds=None):  # the program check samples through it
        return self.fake(None, self.tokenizer, texts, num_samples, sampling)

    def __call__(self, texts, role):
        from opensir_lite.sampling import sampling_settings

        return self.generate(texts, self.args.num_generations, sampling_settings(self.args, role))


def play(sp, fake, tokenizer, step=1):
    """One round of ``sp`` sampled by ``fake``."""
    return sp.play(FakeSampler(fake, tokenizer, sp.args), step, use_system_prompt=True)


def scripted_generate(teacher_texts, student_texts):
    """A stand-in for generation that returns given texts (teacher calls, then student calls): the round's logic,
    not the sampling, is under test."""
    from opensir_lite.generation import Completion

    calls = []

    def fake(model, tokenizer, prompts, n, sampling, max_batch=0, max_prompt_tokens=None):
        texts = student_texts if len(calls) % 2 else teacher_texts  # a round calls teacher, then student
        calls.append(len(prompts))
        out = []
        for i, prompt in enumerate(p for p in prompts for _ in range(n)):
            text = texts[i % len(texts)]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(Completion(tokenizer(prompt, add_special_tokens=False)["input_ids"], ids, text))
        return out

    return fake


def test_parsed_problem_without_valid_answers_is_legal(monkeypatch, tokenizer, embedder):
    """Official legality: a parsed problem whose students give no valid answer keeps its format and diversity
    rewards, gets solvability 0 and response length 0, has no solve rate or combined score, enters the pool under
    all_legal, and is not trained as a student problem."""

    problem = "How many legs do three spiders and two ants have together?"
    teacher = [
        f"<think>legs</think><problem>{problem}</problem><concepts>multiplication facts</concepts>",  # think
        f"<problem>{problem} Explain.</problem><concepts>multiplication facts</concepts>",  # no think
        "no tags at all",  # illegal
        f"<think>x</think><problem>{problem} Twice.</problem><concepts>multiplication facts</concepts>",
    ]
    student = ["I am not sure how to do this."]  # no valid answer for any problem
    fake = scripted_generate(teacher, student)
    pool = ProblemPool.from_seed()
    sp = SelfPlay(make_args(teacher_upscale_ratio=1), pool, embedder)
    result = play(sp, fake, tokenizer)
    records = result.records
    assert [r.legal for r in records] == [True, True, False, True]
    assert [r.reason for r in records] == [None, None, "no_problem", None]
    for r, think in zip(records, [1.0, 0.0, 0.0, 1.0], strict=True):
        assert r.rewards["teacher_format"] == think
        assert r.rewards["solvability"] == 0.0 and r.rewards["response_length"] == 0.0
        assert (r.rewards["diversity"] > 0) == r.legal
        assert r.solve_rate is None and r.combined_score is None
    assert len(pool) == 1 + 3  # every parsed problem joins the pool
    assert result.rows["role"][4:] == [PAD] * 4  # no problem with a solve rate: filler student rows
    assert result.stats["degenerate/no_valid_answer"] == 3 and result.stats["legal_problems"] == 3


def test_student_rows_score_by_vote_class(monkeypatch, tokenizer, embedder):
    """in_majority (the accuracy column) is Vote.agrees of each student row."""

    problem = "What is three plus four, then doubled?"
    teacher = [f"<think>t</think><problem>{problem}</problem><concepts>arithmetic operations</concepts>"]
    student = [f"Therefore, the final answer is: $\\boxed{{{a}}}$" for a in ("14", "14", "7", "14.0")]
    fake = scripted_generate(teacher, student)
    sp = SelfPlay(make_args(teacher_upscale_ratio=1), ProblemPool.from_seed(), embedder)
    rows = play(sp, fake, tokenizer).rows
    assert rows["role"][4:] == [STUDENT] * 4
    assert rows["in_majority"][4:] == [True, True, False, False]  # official string vote: 14.0 is another class
    assert rows["solve_rate"][4] == 0.5


def test_distinct_count_merges_near_duplicates():
    from opensir_lite.round_output import distinct_count

    pool = ProblemPool.from_seed()
    vectors = {1: [1.0, 0.0], 2: [0.99, 0.05], 3: [0.0, 1.0], 4: None}  # 2 is a near-duplicate of 1
    records = [ProblemRecord(id=i, problem=f"p{i}", in_pool=True, legal=True) for i in vectors]
    pool.add(records, {i: np.array(v, dtype=np.float32) for i, v in vectors.items() if v is not None})
    assert distinct_count(pool) == 3  # {1, 2} as one, 3, and 4 (no embedding) counted as distinct
    assert distinct_count(pool, threshold=0.9999) == 4  # a stricter threshold keeps 1 and 2 apart


def test_near_duplicates_earn_no_solvability_and_stay_out(monkeypatch, tokenizer, embedder):
    """near_duplicate_cosine (a learn-cpu departure): copies within a round (or of a pool problem) earn no
    solvability and do not join the pool; a problem unlike the others keeps both."""

    copy = "A garden has 1+1. How many garden roses are in a garden?"
    other = "A train travels 60 miles in 2 hours. What is its average speed in miles per hour?"
    teacher = [f"<think>t</think><problem>{p}</problem><concepts>arithmetic operations</concepts>"
               for p in (copy, copy, copy, other)]  # fmt: skip
    student = [f"Therefore, the final answer is: $\\boxed{{{a}}}$" for a in ("2", "2", "2", "3")]  # solve rate 0.75
    for threshold, dup in ((None, [False] * 4), (0.95, [True, True, True, False])):
        fake = scripted_generate(teacher, student)
        pool = ProblemPool.from_seed()
        sp = SelfPlay(make_args(teacher_upscale_ratio=1, near_duplicate_cosine=threshold), pool, embedder)
        records = play(sp, fake, tokenizer).records
        assert [r.near_duplicate for r in records] == dup
        assert [r.rewards["solvability"] > 0 for r in records] == [not d for d in dup]
        assert [r.in_pool for r in records] == [not d for d in dup]
        assert all(r.rewards["diversity"] >= 0 for r in records)


# The label filter (student_label: program_confirmed) on a hand-built round: each problem has its own student
# answers (G = 4) and its own program, run in the real sandbox. (problem, student answers, program, confirmed)
LABEL_CASES = [
    # the program prints the majority answer: confirmed
    ("Tom has 3 boxes of 2 pens and 1 more pen. How many pens?", ["7", "7", "7", "3"], "print(3 * 2 + 1)", True),
    # the program prints another answer: contradicted
    ("A shelf holds 4 rows of 2 books. How many books?", ["9", "9", "9", "2"], "print(4 * 2)", False),
    # the program raises: no program answer, not confirmed
    ("Ann reads 5 pages a day for 1 day. How many pages?", ["5", "5", "5", "1"], "print(1 / 0)", False),
    # the program prints text that is no answer: not confirmed
    ("Sam buys 2 bags of 3 apples. How many apples?", ["6", "6", "6", "2"], "print('six apples')", False),
    # a tie (solve rate 0.5): the majority is the class seen first, and the program prints the other: not confirmed
    ("Mia has 8 coins and spends 6. How many are left?", ["4", "4", "2", "2"], "print(8 - 6)", False),
    # a tie whose first class the program prints: confirmed
    ("Leo has 9 cards and gives away 5. How many are left?", ["4", "4", "5", "5"], "print(9 - 5)", True),
]


def _label_round_generate(tokenizer, cases):
    """Teacher calls return one legal problem per case plus illegal fillers; student calls answer each problem
    with its case's answers; program calls (n = 1, greedy) write its case's program."""
    from opensir_lite.generation import Completion

    def fake(model, tok, prompts, n, sampling, max_batch=0, max_prompt_tokens=None, **_):
        out = []
        for k, prompt in enumerate(prompts):
            case = next((c for c in cases if c[0] in prompt), None)
            if sampling.temperature == 0.0:  # a program completion
                texts = [f"```python\n{case[2]}\n```"]
            elif case is None:  # a teacher prompt: the k-th output of each group is the k-th case
                texts = [f"<think>t</think><problem>{cases[j][0]}</problem><concepts>arithmetic facts</concepts>"
                         if j < len(cases) else "no tags" for j in range(k * n, (k + 1) * n)]  # fmt: skip
            else:  # a student prompt
                texts = [f"Therefore, the final answer is: $\\boxed{{{a}}}$" for a in case[1]]
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            out += [Completion(ids, tokenizer(t, add_special_tokens=False)["input_ids"], t) for t in texts]
        return out

    return fake


@pytest.mark.skipif(
    __import__("opensir_lite.sandbox").sandbox.isolation_unavailable_reason() is not None, reason="no namespaces"
)
def test_label_filter_keeps_only_confirmed_labels(monkeypatch, tokenizer, embedder):
    """program_confirmed: a problem trains the student, and earns solvability, only when its program printed the
    majority answer; TRL's solvability (from the row columns) agrees with the round's; with the filter off the
    same round rewards and trains by the majority alone."""
    from opensir_lite.rewards import make_reward_funcs, make_teacher_rewards

    fake = _label_round_generate(tokenizer, LABEL_CASES)  # the programs come from the round's sampler too
    rounds = {}
    for label in ("majority", "program_confirmed"):
        args = make_args(teacher_upscale_ratio=2, num_student_groups=3, student_label=label, program_check=False,
                         program_max_new_tokens=32, allow_unisolated_sandbox=False)  # fmt: skip
        sp = SelfPlay(args, ProblemPool.from_seed(), embedder)
        rounds[label] = play(sp, fake, tokenizer)
    by_problem = {label: {r.problem: r for r in res.records if r.legal} for label, res in rounds.items()}
    for problem, _, _, confirmed in LABEL_CASES:
        plain, filtered = by_problem["majority"][problem], by_problem["program_confirmed"][problem]
        assert plain.label_confirmed is None and plain.rewards["solvability"] > 0  # every case is in the gate
        assert filtered.label_confirmed is confirmed, problem
        assert (filtered.rewards["solvability"] > 0) is confirmed, problem
        assert filtered.rewards["diversity"] == pytest.approx(plain.rewards["diversity"])  # only solvability moves
    res = rounds["program_confirmed"]
    student_rows = [i for i, role in enumerate(res.rows["role"]) if role == STUDENT]
    trained = {res.rows["problem_id"][i] for i in student_rows}
    confirmed_ids = {r.id for r in res.records if r.label_confirmed}
    assert trained == confirmed_ids and len(trained) == 2  # both confirmed problems, nothing else
    assert res.rows["role"].count(PAD) == 4  # the third student group is a filler
    assert all(res.rows["label_confirmed"][i] is True for i in student_rows)
    assert res.stats["labels/confirmed"] == 2 and res.stats["labels/in_gate"] == len(LABEL_CASES)
    assert res.stats["labels/in_gate_confirmed_share"] == pytest.approx(2 / len(LABEL_CASES))
    assert res.stats["programs/checked"] == len(LABEL_CASES)
    # TRL recomputes solvability from the teacher rows' columns: the same values as the round's records
    teacher_rows = [i for i, role in enumerate(res.rows["role"]) if role == TEACHER]
    columns = {k: [res.rows[k][i] for i in teacher_rows] for k in ("role", "legal", "solve_rate", "near_duplicate",
                                                                    "label_confirmed")}  # fmt: skip
    solvability = make_teacher_rewards(num_generations=4)[0]
    by_id = {r.id: r for r in res.records}
    assert solvability([""] * len(teacher_rows), **columns) == [
        by_id[res.rows["problem_id"][i]].rewards["solvability"] for i in teacher_rows
    ]
    # and the function TRL calls reads those values back from the rows' teacher_rewards column
    trl_solvability = make_reward_funcs()[0]
    assert trl_solvability([""] * len(res.rows["role"]), **res.rows) == [
        by_id[res.rows["problem_id"][i]].rewards["solvability"] if role == TEACHER else None
        for i, role in enumerate(res.rows["role"])
    ]
    # the filter off: the three best combined scores train, whatever their programs would print
    plain_trained = {rounds["majority"].rows["problem_id"][i] for i, role in
                     enumerate(rounds["majority"].rows["role"]) if role == STUDENT}  # fmt: skip
    assert len(plain_trained) == 3 and "labels/confirmed" not in rounds["majority"].stats


@pytest.mark.parametrize("label", ["program_confirmed", "program_rule"])
def test_label_filter_without_confirmed_problems_trains_fillers(monkeypatch, tokenizer, embedder, label):
    """No confirmed problem in a round: the student groups are fillers (no loss), as with no legal problem."""
    cases = [c for c in LABEL_CASES if not c[3]][:2]
    fake = (_label_round_generate if label == "program_confirmed" else _rule_round_generate)(tokenizer, cases)
    args = make_args(teacher_upscale_ratio=1, student_label=label, label_rule="confirm 1 of 1",
                     program_max_new_tokens=32, allow_unisolated_sandbox=True)  # fmt: skip
    res = play(SelfPlay(args, ProblemPool.from_seed(), embedder), fake, tokenizer)
    assert res.rows["role"][4:] == [PAD] * 4
    assert res.stats["labels/confirmed"] == 0 and res.stats["labels/confirmed_share"] == 0.0


def _rule_round_generate(tokenizer, cases):
    """As :func:`_label_round_generate`, with programs recognised by their prompt (a label rule samples them at
    the recipe's temperature): every one of the n programs of a problem is its case's program."""
    from opensir_lite.prompts import PROGRAM_SYSTEM_PROMPT

    plain = _label_round_generate(tokenizer, cases)

    def fake(model, tok, prompts, n, sampling, max_batch=0, max_prompt_tokens=None, **_):
        from opensir_lite.generation import Completion

        if not any(PROGRAM_SYSTEM_PROMPT[:60] in p for p in prompts):  # teacher and student calls
            return plain(model, tok, prompts, n, sampling)
        out = []
        for prompt in prompts:
            case = next(c for c in cases if c[0] in prompt)
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            text = f"```python\n{case[2]}\n```"
            out += [Completion(ids, tokenizer(text, add_special_tokens=False)["input_ids"], text)] * n
        return out

    return fake


@pytest.mark.skipif(
    __import__("opensir_lite.sandbox").sandbox.isolation_unavailable_reason() is not None, reason="no namespaces"
)
@pytest.mark.parametrize(
    ("rule", "kept", "changed"),
    [
        # two sampled programs that both print the label: the same labels as the one-program filter
        ("confirm 2 of 2", [c[3] for c in LABEL_CASES], {}),
        # a weighted vote keeps every label and moves the tie 4,4,2,2 to the 2 its program prints
        ("weighted x2 by 1", [True] * len(LABEL_CASES), {"Mia has 8 coins and spends 6. How many are left?": "2"}),
        # the chosen rule (results/qwen0.5b/label-rules): the two ties (solve rate 0.5 < 0.625) are dropped without programs
        ("confirm 2 of 4, solve rate >= 0.625", [True, False, False, False, False, False], {}),
    ],
)
def test_label_rule_keeps_drops_and_changes_labels(tokenizer, embedder, rule, kept, changed):
    """student_label program_rule: the rule's k programs per answered problem decide which labels train; a
    changed label becomes the vote the students are rewarded against, the record's majority and solve rate."""
    from opensir_lite.label_rules import RULES_BY_NAME

    fake = _rule_round_generate(tokenizer, LABEL_CASES)
    args = make_args(teacher_upscale_ratio=2, num_student_groups=6, student_label="program_rule", label_rule=rule,
                     program_check=False, program_max_new_tokens=32, allow_unisolated_sandbox=False)  # fmt: skip
    sp = SelfPlay(args, ProblemPool.from_seed(), embedder)
    res = play(sp, fake, tokenizer)
    evidence = {row["id"]: row for row in sp.take_evidence()}
    by_problem = {r.problem: r for r in res.records if r.legal}
    for (problem, answers, _, _), keep in zip(LABEL_CASES, kept, strict=True):
        r = by_problem[problem]
        assert r.label_confirmed is keep, problem
        assert r.majority_answer == changed.get(problem, answers[0]), problem
        floor = RULES_BY_NAME[rule].min_rate or 0.0
        if r.solve_rate < floor:
            assert r.id not in evidence or "program_answers" not in evidence[r.id]  # no programs asked for
            continue
        assert evidence[r.id]["label_changed"] is (problem in changed)
        assert len(evidence[r.id]["program_answers"]) == RULES_BY_NAME[rule].k
    floor = RULES_BY_NAME[rule].min_rate or 0.0
    above = sum(max(a.count(x) for x in a) / len(a) >= floor for _, a, _, _ in LABEL_CASES)  # 4 of 6 at 0.625
    assert res.stats["programs/checked"] == RULES_BY_NAME[rule].k * above
    assert res.stats["labels/changed"] == len(changed)
    assert res.stats["labels/confirmed"] == sum(kept)
    trained = {res.rows["problem_id"][i] for i, role in enumerate(res.rows["role"]) if role == STUDENT}
    assert trained == {r.id for r in res.records if r.label_confirmed}
    for problem, label in changed.items():  # the students who wrote the new label now agree with it
        pid = by_problem[problem].id
        rows = [i for i, p in enumerate(res.rows["problem_id"]) if p == pid and res.rows["role"][i] == STUDENT]
        assert [res.rows["in_majority"][i] for i in rows] == [res.rows["answer"][i] == label for i in rows]
        assert [res.rows["majority_answer"][i] for i in rows] == [label] * len(rows)
