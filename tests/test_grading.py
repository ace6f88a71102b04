"""Majority vote by equivalence class, shared by training and evaluation."""

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
