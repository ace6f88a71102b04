"""Majority vote by the official string rule or by equivalence class, shared by training and evaluation."""

import pytest

from opensir_lite.grading import majority_vote

CASES = [
    # (answers, majority, count, n_valid)
    (["2", "2", "3", "2"], "2", 3, 4),  # clear majority
    (["\\frac{1}{2}", "0.5", "1/2", "3"], "\\frac{1}{2}", 3, 4),  # one class written three ways
    (["3", "2", "2", "3"], "3", 2, 4),  # tie: the class seen first wins
    ([None, "5", None, None], "5", 1, 1),  # invalid answers do not count
    ([None, None], None, 0, 0),  # no valid answer
    ([], None, 0, 0),  # nothing at all
    (["7", "7", "7", "7"], "7", 4, 4),  # all equal
]


@pytest.mark.parametrize("answers,majority,count,n_valid", CASES)
def test_majority_vote(answers, majority, count, n_valid):
    vote = majority_vote(answers)
    assert (vote.majority, vote.count, vote.n_valid) == (majority, count, n_valid)
    assert vote.solve_rate == (count / n_valid if n_valid else None)


def test_agrees_marks_members_of_the_majority_class():
    vote = majority_vote(["0.5", "\\frac{1}{2}", "3", None])
    assert [vote.agrees(i) for i in range(4)] == [True, True, False, False]


@pytest.mark.parametrize(
    "answers,by,majority,count,n_valid",
    [
        (["3.0", "3", "3", "4", "4", "4"], "string", "4", 3, 6),  # official: 3.0 and 3 split, 4 wins
        (["3.0", "3", "3", "4", "4", "4"], "equivalence", "3.0", 3, 6),  # 3.0 and 3 merge; the tie goes first-seen
        (["3.0", "3", "3", "4", "4"], "equivalence", "3.0", 3, 5),  # and then win outright
        (["(x+1)^2", "x^2+2x+1", "x+2"], "string", "(x+1)^2", 1, 3),  # three string classes of one each
        (["(x+1)^2", "x^2+2x+1", "x+2"], "equivalence", "(x+1)^2", 2, 3),  # one class of two
    ],
)
def test_string_vote_splits_what_equivalence_merges(answers, by, majority, count, n_valid):
    vote = majority_vote(answers, by=by)
    assert (vote.majority, vote.count, vote.n_valid) == (majority, count, n_valid)


def test_unknown_vote_rule_is_an_error():
    with pytest.raises(ValueError, match="majority vote"):
        majority_vote(["1"], by="regex")
