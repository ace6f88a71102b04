"""Labelling rules with programs (opensir_lite.label_rules): each rule's label on hand-made problems, the halves,
the choice on the selection half, the table and the test-time vote."""

from __future__ import annotations

import pytest

from opensir_lite.label_rules import (
    RULES,
    RULES_BY_NAME,
    LabelRule,
    apply_rule,
    choose,
    confirmed_vote,
    goal_verdict,
    half,
    rule_figures,
    rules_table,
    share,
)

# 8 answers: "12" x4 (the majority, solve rate 0.5), "10" x3, None x1
ANSWERS = ["12", "10", "12", "10", "12", None, "10", "12"]


@pytest.mark.parametrize(
    ("rule", "programs", "expected"),
    [
        # the plain majority, whatever the programs print
        ("majority", ["10.0", "10", None, None], ("12", False)),
        # one program printing the majority (as a float) confirms it
        ("confirm 1 of 1", ["12.0", None, None, None], ("12", False)),
        # one program printing another answer drops the label
        ("confirm 1 of 1", ["10", "12", "12", "12"], (None, False)),
        # a failed program (None) confirms nothing
        ("confirm 1 of 1", [None, "12", "12", "12"], (None, False)),
        # 1 of 2 is enough ...
        ("confirm 1 of 2", ["10", "12", None, None], ("12", False)),
        # ... 2 of 2 is not met by one
        ("confirm 2 of 2", ["10", "12", None, None], (None, False)),
        # 3 of 4 confirm
        ("confirm 3 of 4", ["12", "12", "10", "12"], ("12", False)),
        ("confirm 4 of 4", ["12", "12", "10", "12"], (None, False)),
        # the programs' own majority is the label (2 of 3 valid, margin 1)
        ("program majority of 4", ["12", "12", "10", None], ("12", False)),
        # a tie among programs has no majority by margin 1 over the runner-up
        ("program majority of 4", ["12", "10", "12", "10"], (None, False)),
        # margin 2 asks for two votes more than the runner-up
        ("program majority of 4, margin 2", ["12", "12", "12", "10"], ("12", False)),
        ("program majority of 4, margin 2", ["12", "12", "10", None], (None, False)),
        # solve rate 4/7 < 0.625: dropped without reading programs
        ("solve rate >= 0.625", [], (None, False)),
        # a weighted vote moves the label to the answer the program prints: 3 x 2 = 6 > 4
        ("weighted x2 by 1", ["10.00", None, None, None], ("10", True)),
        # weighting the majority itself changes nothing
        ("weighted x2 by 1", ["12", None, None, None], ("12", False)),
        # weighted by 4 programs, then confirmed by at least 2 of them: "10" printed by 2
        ("weighted x4 by 4, confirm 2", ["10", "10", "7", None], ("10", True)),
        # ... by 1 only: the new label is not confirmed twice
        ("weighted x4 by 4, confirm 2", ["10", "7", "7", None], (None, False)),
        # a program printing an answer no student gave changes nothing
        ("weighted x4 by 4", ["7", None, None, None], ("12", False)),
    ],
)
def test_apply_rule(rule, programs, expected):
    label = apply_rule(RULES_BY_NAME[rule], ANSWERS, programs)
    assert (label.answer, label.changed) == expected


def test_trust_rate_asks_for_confirmation_only_below_it():
    high = ["5", "5", "5", "5", "5", "5", "7", None]  # solve rate 6/7 >= 0.75
    rule = RULES_BY_NAME["confirm 1 of 1 below solve rate 0.75"]
    assert apply_rule(rule, high, ["7"]).answer == "5"  # trusted: kept unconfirmed
    assert apply_rule(rule, ANSWERS, ["10"]).answer is None  # 4/7 < 0.75: confirmation asked, and missing
    assert apply_rule(rule, ANSWERS, ["12"]).answer == "12"


def test_no_valid_answer_gives_no_label():
    assert apply_rule(RULES_BY_NAME["confirm 1 of 1"], [None] * 8, ["3"]).answer is None


def test_rules_are_uniquely_named_and_cost_their_programs():
    assert len(RULES_BY_NAME) == len(RULES)
    assert {r.k for r in RULES} == {0, 1, 2, 4}
    assert all(r.min_agree <= r.k for r in RULES)


def test_halves_are_fixed_and_balanced():
    # decided by the row alone: the same on every call and machine
    assert half("asdiv", 5) == half("asdiv", 5)
    halves = [half("asdiv", r) for r in range(2000)]
    assert 900 < halves.count("select") < 1100
    # the source is part of the key: the same row number falls in different halves for different sources
    assert any(half("pool", r) != half("asdiv", r) for r in range(20))


def _row(answers, right, programs, source="asdiv", row=0):
    votes_right = dict(zip(answers, right, strict=True))
    from opensir_lite.grading import majority_vote

    vote = majority_vote(answers)
    return {"source": source, "row": row, "answers": answers, "right": right, "program_answers": programs,
            "majority_right": bool(votes_right.get(vote.majority)), "solve_rate": vote.solve_rate,
            "half": half(source, row)}  # fmt: skip


def test_rule_figures_count_precision_kept_and_changes():
    rows = [
        _row(ANSWERS, [True, False, True, False, True, False, False, True], ["12", "12", "12", "12"]),  # right, kept
        _row(ANSWERS, [False, True, False, True, False, False, True, False], ["10", "10", "10", "10"]),  # wrong
        _row(ANSWERS, [False, True, False, True, False, False, True, False], ["12", "9", "9", "9"]),  # wrong, kept
    ]
    plain = rule_figures(RULES_BY_NAME["majority"], rows)
    assert (plain["kept"], plain["right_kept"], plain["majority_right"]) == (3, 1, 1)
    confirm = rule_figures(RULES_BY_NAME["confirm 1 of 1"], rows)
    assert (confirm["kept"], confirm["right_kept"], confirm["kept_share_of_right"]) == (2, 1, 1.0)
    weighted = rule_figures(RULES_BY_NAME["weighted x2 by 1"], rows)
    # row 2's label moves to "10", which is right there: 2 right of 3, one change, right
    assert (weighted["right_kept"], weighted["changed"], weighted["changed_right"]) == (2, 1, 1)
    assert weighted["kept_share_of_right"] == 2.0


def test_choose_takes_the_best_lower_bound_among_rules_keeping_enough():
    figures = [
        {"rule": "a", "programs_per_problem": 0, "kept_share_of_right": 1.0, "precision": share(70, 100)},
        {"rule": "b", "programs_per_problem": 4, "kept_share_of_right": 0.5, "precision": share(45, 50)},
        {"rule": "c", "programs_per_problem": 1, "kept_share_of_right": 0.3, "precision": share(30, 30)},  # too few
        {
            "rule": "d",
            "programs_per_problem": 1,
            "kept_share_of_right": 0.5,
            "precision": share(45, 50),
        },  # = b, cheaper
    ]
    assert choose(figures) == "d"
    assert choose(figures, min_kept=1.5) is None


@pytest.mark.parametrize(
    ("precision", "kept", "met"),
    [
        (share(190, 200), 0.5, True),  # 95% [91.0, ...], half the right labels
        (share(19, 20), 0.5, False),  # 95% but the lower bound is 76.4%
        (share(190, 200), 0.3, False),  # too few right labels kept
        (share(170, 200), 0.9, False),  # 85%
    ],
)
def test_goal_verdict(precision, kept, met):
    assert goal_verdict({"precision": precision, "kept_share_of_right": kept})["met"] is met


def test_rules_table_splits_chooses_on_select_and_reports_held():
    samples, votes = [], {}
    for row in range(40):
        answers = ["3", "3", "3", "3", "3", "4", "4", "4"]  # solve rate 0.625
        good = row % 4 != 0  # the majority is right on 3 rows of 4
        samples.append({"row": row, "answers": answers, "right": [good] * 5 + [not good] * 3,
                        "majority_right": good, "solve_rate": 0.625, "majority": "3"})  # fmt: skip
        votes[row] = {"answers": ["3", "3", "3", "3"] if good else ["4", "4", "3", "4"]}
    samples.append({"row": 99, "answers": ["1"] * 8, "right": [True] * 8, "majority_right": True, "solve_rate": 1.0})
    table = rules_table({"asdiv": (samples, votes)}, 0.5, 0.9, rules=[RULES_BY_NAME["majority"],
                        RULES_BY_NAME["confirm 2 of 4"], LabelRule("confirm 1 of 4", k=4, min_agree=1)])  # fmt: skip
    assert table["rows"] == 40  # the row at solve rate 1.0 is outside the gate
    assert sum(table["rows_by_half"].values()) == 40
    assert table["chosen"] == "confirm 2 of 4"  # 100% on select; "confirm 1 of 4" keeps the wrong ones too
    assert table["held"]["precision"]["p"] == 1.0
    assert table["by_source"]["asdiv"][0]["rule"] == "majority"


@pytest.mark.parametrize(
    ("answers", "program", "expected"),
    [
        # the program confirms the minority class: it wins
        (["12", "10", "12", "10", "12", None, "10", "12"], "10.0", 1),
        # the program confirms nothing: the plain majority
        (["12", "10", "12", "10", "12", None, "10", "12"], "7", 0),
        # no program answer: the plain majority
        (["12", "10", "12", "10", "12", None, "10", "12"], None, 0),
        # no valid answer at all
        ([None, None], "3", None),
        # two string classes the program confirms ("5" and "5.0"): the larger
        (["5.0", "5", "5", "6", "6", "6", "6", "6"], "5", 1),
    ],
)
def test_confirmed_vote(answers, program, expected):
    assert confirmed_vote(answers, program) == expected
