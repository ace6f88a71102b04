"""Grading: the majority vote over a group's answers, shared by training and evaluation.

Two rules group equal answers (``by``): ``string``, the official OpenSIR rule (equal strings of math-verify's normal
form, :func:`opensir_lite.parsing.answer_key`), and ``equivalence`` (math-verify ``verify`` against each class's
first answer), which also merges forms the string rule splits, such as ``3.0`` and ``3``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opensir_lite.parsing import ANSWER_VOTES, answer_key, answers_equal


@dataclass(frozen=True)
class Vote:
    """Result of a majority vote.

    ``majority`` is the first-seen answer of the largest class (ties go to the class seen first, as
    ``Counter.most_common`` does in the official code), ``count`` its size, ``n_valid`` the number of valid answers
    and ``solve_rate = count / n_valid``. ``classes`` gives, for each input answer, the index of its class (None
    for invalid answers).
    """

    majority: str | None
    count: int
    n_valid: int
    classes: list[int | None] = field(default_factory=list)
    majority_class: int | None = None

    @property
    def solve_rate(self) -> float | None:
        return self.count / self.n_valid if self.n_valid else None

    def agrees(self, index: int) -> bool:
        """True when answer ``index`` belongs to the majority class (the student's accuracy reward)."""
        return self.majority_class is not None and self.classes[index] == self.majority_class


def majority_vote(answers: Sequence[str | None], by: str = "string") -> Vote:
    """Group valid answers into classes (``by``: ``string`` or ``equivalence``) and pick the largest."""
    if by not in ANSWER_VOTES:
        raise ValueError(f"majority vote must be by one of {', '.join(ANSWER_VOTES)}, got {by!r}")
    representatives: list[str] = []
    keys: dict[str, int] = {}
    sizes: list[int] = []
    classes: list[int | None] = []
    for answer in answers:
        key = answer_key(answer) if by == "string" and answer is not None else None
        if answer is None or (by == "string" and key is None):
            classes.append(None)
            continue
        if by == "string":
            k = keys.get(key)
        else:
            k = next((j for j, rep in enumerate(representatives) if answers_equal(rep, answer)), None)
        if k is None:
            k = len(representatives)
            representatives.append(answer)
            sizes.append(0)
            if key is not None:
                keys[key] = k
        sizes[k] += 1
        classes.append(k)
    if not representatives:
        return Vote(majority=None, count=0, n_valid=0, classes=classes)
    best = max(range(len(sizes)), key=lambda k: (sizes[k], -k))
    return Vote(
        majority=representatives[best], count=sizes[best], n_valid=sum(sizes), classes=classes, majority_class=best
    )
