"""Reward formulas against hand-computed values, and the TRL reward functions' role handling."""

import pytest

from opensir_lite.rewards import (
    PAD,
    STUDENT,
    TEACHER,
    accuracy,
    combined_score,
    make_teacher_rewards,
    response_length_score,
    solvability_score,
    solve_rate_levels,
    student_format,
)


def test_levels_for_g8():
    # i/8 inside [0.5, 0.9]: 4/8, 5/8, 6/8, 7/8
    assert solve_rate_levels(0.5, 0.9, 8) == [0.5, 0.625, 0.75, 0.875]


SOLVABILITY_CASES = [
    # (solve_rate, G, expected): midpoint 0.7, half range 0.2, floor 1/|L|
    (0.7, 8, 1.0),  # peak at the midpoint
    (0.5, 8, 0.25),  # lower edge: 1/|L| = 1/4
    (0.9, 8, 0.25),  # upper edge
    (0.625, 8, 1 - 0.75 * 0.375),  # 0.075 from the peak -> 1 - (1 - 1/4) * 0.375
    (0.75, 8, 1 - 0.75 * 0.25),  # 0.05 from the peak
    (0.875, 8, 1 - 0.75 * 0.875),  # 0.175 from the peak
    (0.49, 8, 0.0),  # just below the gate
    (0.91, 8, 0.0),  # just above the gate
    (1.0, 8, 0.0),  # everyone agrees: too easy
    (0.0, 8, 0.0),  # nobody agrees
    (None, 8, 0.0),  # no valid answer
    (0.5, 4, 0.5),  # G=4: levels 0.5, 0.75 -> floor 1/2
]


@pytest.mark.parametrize("solve_rate,G,expected", SOLVABILITY_CASES)
def test_solvability(solve_rate, G, expected):
    assert solvability_score(solve_rate, 0.5, 0.9, G) == pytest.approx(expected)


@pytest.mark.parametrize(
    "mean_tokens,cap,baseline,expected",
    [
        (500, 1000, 1000, 0.5),  # half the baseline
        (2500, 1000, 1000, 1.0),  # capped
        (2500, None, 1000, 2.5),  # no cap
        (0, 1000, 1000, 0.0),  # empty
        (None, 1000, 1000, 0.0),  # no student samples
    ],
)
def test_response_length(mean_tokens, cap, baseline, expected):
    assert response_length_score(mean_tokens, cap, baseline) == pytest.approx(expected)


def test_combined_score():
    assert combined_score(0.25, 0.3) == pytest.approx(0.55)  # difficulty + diversity
    assert combined_score(1.0, 0.3, 2.0, 0.5) == pytest.approx(2.15)  # weighted


def test_teacher_rewards_by_row():
    solvability, diversity, teacher_format, response_length = make_teacher_rewards(num_generations=8)
    completions = ["<think>a</think><problem>p</problem>", "<think>a</think><problem>p</problem>", "x", "y"]
    cols = dict(
        role=[TEACHER, TEACHER, STUDENT, PAD],
        legal=[True, False, True, False],  # row 2 illegal: 0 on all
        solve_rate=[0.7, 0.7, None, None],
        novelty=[0.3, 0.3, None, None],
        mean_student_tokens=[500.0, 500.0, None, None],
    )
    assert solvability(completions, **cols) == [1.0, 0.0, None, None]
    assert diversity(completions, **cols) == [0.3, 0.0, None, None]
    assert teacher_format(completions, **cols) == [1.0, 0.0, None, None]
    assert response_length(completions, **cols) == [0.5, 0.0, None, None]
    assert solvability.__name__ == "solvability"  # metric name rewards/solvability/mean


def test_student_rewards_by_row():
    completions = [
        "Therefore, the final answer is: $\\boxed{0.5}$",  # agrees with 1/2
        "so \\boxed{3}",  # disagrees, no final line
        "no answer",  # no answer = 0
        [{"role": "assistant", "content": "Therefore, the final answer is: $\\boxed{1}$"}],  # conversational
        "teacher row",
    ]
    role = [STUDENT, STUDENT, STUDENT, STUDENT, TEACHER]
    in_majority = [True, False, False, True, None]  # computed upstream by the vote (Vote.agrees)
    assert accuracy(completions, role=role, in_majority=in_majority) == [1.0, 0.0, 0.0, 1.0, None]
    assert student_format(completions, role=role) == [1.0, 0.0, 0.0, 1.0, None]


def test_accuracy_is_majority_class_membership():
    """verify is not transitive: x=1 ~ 1 ~ y=1 but x=1 !~ y=1. The answer "1" joins the class of x=1 (seen first),
    so the solve rate (3/5, the y=1 class) does not count it; comparing it with the majority's representative
    would still pay it 1. Accuracy follows the classes, so reward and solve rate agree."""
    from opensir_lite.grading import majority_vote
    from opensir_lite.parsing import answers_equal

    answers = ["x=1", "y=1", "y=1", "y=1", "1"]
    vote = majority_vote(answers, by="equivalence")
    assert (vote.majority, vote.solve_rate) == ("y=1", 3 / 5)
    assert answers_equal("1", vote.majority)  # the old rule would have paid this row
    scores = accuracy(answers, role=[STUDENT] * 5, in_majority=[vote.agrees(i) for i in range(5)])
    assert scores == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert sum(scores) / len(answers) == vote.solve_rate  # one notion of agreement


def test_teacher_format_sees_the_prefill():
    teacher_format = make_teacher_rewards()[2]
    # the reply started with a prefilled "<think>": the completion alone has only the closing tag
    completions = ["plan</think><problem>p</problem>", "plan</think><problem>p</problem>"]
    cols = dict(role=[TEACHER, TEACHER], legal=[True, True], teacher_prefill=["<think>", ""])
    assert teacher_format(completions, **cols) == [1.0, 0.0]


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), "garbage"],  # non-finite or non-numeric columns score 0
)
def test_rewards_stay_finite(value):
    from opensir_lite.rewards import make_teacher_rewards

    for func in make_teacher_rewards(num_generations=4):
        out = func(["<think>t</think>"], role=["teacher"], legal=[True], solve_rate=[value], novelty=[value],
                   mean_student_tokens=[value], teacher_prefill=[""])  # fmt: skip
        assert out[0] is not None and out[0] == out[0] and abs(out[0]) != float("inf")


@pytest.mark.parametrize(
    "rows,G,weights,expected",
    [
        # one group of two: totals 1 and 0, mean 0.5, unbiased std 0.7071 -> +-0.5/0.7072
        ([[1.0], [0.0]], 2, None, [0.5 / (0.5**0.5 + 1e-4), -0.5 / (0.5**0.5 + 1e-4)]),
        # equal rewards: zero advantages (no gradient)
        ([[0.3, 0.2], [0.3, 0.2]], 2, None, [0.0, 0.0]),
        # weights apply before the sum: totals 2 and 0
        ([[1.0, None], [0.0, None]], 2, [2.0, 1.0], [1.0 / (2**0.5 + 1e-4), -1.0 / (2**0.5 + 1e-4)]),
        # a filler group (no function scored it) gets 0
        ([[None], [None]], 2, None, [0.0, 0.0]),
    ],
)
def test_group_advantages(rows, G, weights, expected):
    from opensir_lite.rewards import group_advantages

    assert group_advantages(rows, G, weights) == pytest.approx(expected, abs=1e-6)


def test_group_advantages_match_trl():
    import torch
    from trl.trainer.utils import nanstd

    from opensir_lite.rewards import group_advantages

    rng = torch.Generator().manual_seed(0)
    rewards = torch.rand((12, 3), generator=rng)
    rewards[:4, 2] = float("nan")  # a function that skips some rows
    weights = torch.tensor([1.0, 0.5, 2.0])
    totals = (rewards * weights).nansum(dim=1)  # TRL: sum_then_normalize, scale_rewards="group"
    mean = totals.view(-1, 4).mean(dim=1).repeat_interleave(4)
    std = nanstd(totals.view(-1, 4), dim=1).repeat_interleave(4)
    trl_advantages = ((totals - mean) / (std + 1e-4)).tolist()
    ours = group_advantages([[None if v != v else v for v in row] for row in rewards.tolist()], 4, weights.tolist())
    assert ours == pytest.approx(trl_advantages, abs=1e-5)


@pytest.mark.parametrize(
    "text,legal,official,partial",
    [
        ("<think>t</think><problem>How many legs?</problem><concepts>counting legs</concepts>", True, 1.0, 1.0),
        ("<problem>How many legs?</problem><concepts>counting legs</concepts>", True, 0.0, 2 / 3),  # no think
        ("<think>t</think><problem>How many legs?</problem>", False, 0.0, 2 / 3),  # illegal: no concepts
        ("<think>only a plan</think>", False, 0.0, 1 / 3),  # illegal: one tag pair
        ("prose", False, 0.0, 0.0),  # nothing
    ],
)
def test_partial_format_credit(text, legal, official, partial):
    """Partial credit (a departure, off in the paper recipe) gives illegal outputs a format gradient."""
    from opensir_lite.rewards import make_teacher_rewards

    cols = dict(role=[TEACHER], legal=[legal], teacher_prefill=[""])
    assert make_teacher_rewards()[2]([text], **cols) == [official]
    assert make_teacher_rewards(format_credit="partial")[2]([text], **cols) == [pytest.approx(partial)]


def test_near_duplicate_rows_earn_no_solvability():
    from opensir_lite.rewards import make_teacher_rewards

    solvability = make_teacher_rewards(num_generations=8)[0]
    cols = dict(role=[TEACHER, TEACHER], legal=[True, True], solve_rate=[0.7, 0.7], near_duplicate=[False, True])
    assert solvability(["a", "b"], **cols) == [1.0, 0.0]
    assert solvability(["a", "b"], **{**cols, "near_duplicate": None}) == [1.0, 1.0]  # the column absent: official


BOXED = "so 4.\nTherefore, the final answer is: $\\boxed{4}$"  # the student format line
PLAIN = "so the answer is 4"


@pytest.mark.parametrize(
    "accuracy,gate,expected",
    [
        ([1, 0, 1, 1], "none", [True] * 4),  # the paper: format always scored
        ([1, 1, 1, 1], "none", [True] * 4),
        ([1, 0, 1, 1], "accuracy_variance", [True] * 4),  # accuracy varies: format scored
        ([1, 1, 1, 1], "accuracy_variance", [False] * 4),  # the group agrees: no format-only advantage
        ([0, 0, 0, 0, 1, 0, 0, 0], "accuracy_variance", [False] * 4 + [True] * 4),  # per group of G=4
    ],
)
def test_format_scored_column(accuracy, gate, expected):
    from opensir_lite.rewards import format_scored_column

    assert format_scored_column(accuracy, 4, gate) == expected


def test_student_format_respects_the_gate_column():
    from opensir_lite.rewards import student_format

    texts = [BOXED, PLAIN, BOXED]
    roles = [STUDENT, STUDENT, TEACHER]
    assert student_format(texts, role=roles) == [1.0, 0.0, None]  # no column: always scored (older rows)
    assert student_format(texts, role=roles, format_scored=[True, False, True]) == [1.0, None, None]


@pytest.mark.parametrize(
    "accuracy,fmt,scale,share,format_only,acc_groups",
    [
        ([1, 1, 1, 1], [1, 0, 0, 0], True, 1.0, 1, 0),  # accuracy agrees: all of |advantage| is format (std-scaled)
        ([1, 1, 1, 1], [None] * 4, True, None, 0, 0),  # gated: no advantage at all
        ([1, 0, 0, 0], [0, 0, 0, 0], True, 0.0, 0, 1),  # only accuracy varies
        # both vary, unscaled: |format terms| 0.1 x (0.5 x 4) = 0.2 against |accuracy terms| 0.75 + 3 x 0.25 = 1.5
        ([1, 0, 0, 0], [1, 1, 0, 0], False, 0.2 / 1.7, 0, 1),
        # two groups: a format-only group and an accuracy group, std-scaled (each group's terms over its std)
        ([1, 1, 1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0], True, None, 1, 1),
    ],
)
def test_format_advantage_share(accuracy, fmt, scale, share, format_only, acc_groups):
    from opensir_lite.rewards import format_advantage_share

    out = format_advantage_share(accuracy, fmt, 4, (1.0, 0.1), scale=scale)
    assert out["format_only_groups"] == format_only and out["accuracy_variance_groups"] == acc_groups
    if share is not None:
        assert out["format_share"] == pytest.approx(share, abs=1e-3)
    elif len(accuracy) == 8:  # each group's |terms| sum to about the same after scaling: about half is format
        assert 0.4 < out["format_share"] < 0.6
    else:
        assert out["format_share"] is None


def test_format_advantage_share_matches_group_advantages():
    """The format and accuracy terms add up to the advantages TRL computes (group_advantages)."""
    from opensir_lite.rewards import format_advantage_share, group_advantages

    acc, fmt = [1, 0, 0, 1], [1, 1, 0, 0]
    adv = group_advantages([[a, f] for a, f in zip(acc, fmt, strict=True)], 4, [1.0, 0.1], scale=False)
    out = format_advantage_share(acc, fmt, 4, (1.0, 0.1), scale=False)
    assert out["format_abs"] + out["accuracy_abs"] == pytest.approx(
        sum(abs(1.0 * (a - 0.5)) + abs(0.1 * (f - 0.5)) for a, f in zip(acc, fmt, strict=True))
    )
    assert sum(abs(x) for x in adv) <= out["format_abs"] + out["accuracy_abs"] + 1e-9  # terms may cancel per row
