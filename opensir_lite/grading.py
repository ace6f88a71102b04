"""Grading: majority vote over answers by mathematical equivalence class, shared by training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opensir_lite.parsing import answers_equal


@dataclass(frozen=True)
class Vote:
    """Result of a majority vote.

    ``majority`` is the first-seen answer of the largest equivalence class (ties go to the class seen first),
    ``count`` its size, ``n_valid`` the number of valid answers and ``solve_rate = count / n_valid``.
    ``classes`` gives, for each input answer, the index of its class (None for invalid answers).
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
        """True when answer ``index`` belongs to the majority class."""
        return self.majority_class is not None and self.classes[index] == self.majority_class


def majority_vote(answers: Sequence[str | None]) -> Vote:
    """Group valid answers into equivalence classes (against each class's first answer) and pick the largest."""
    representatives: list[str] = []
    sizes: list[int] = []
    classes: list[int | None] = []
    for answer in answers:
        if answer is None:
            classes.append(None)
            continue
        for k, rep in enumerate(representatives):
            if answers_equal(rep, answer):
                sizes[k] += 1
                classes.append(k)
                break
        else:
            representatives.append(answer)
            sizes.append(1)
            classes.append(len(representatives) - 1)
    if not representatives:
        return Vote(majority=None, count=0, n_valid=0, classes=classes)
    best = max(range(len(sizes)), key=lambda k: (sizes[k], -k))
    return Vote(
        majority=representatives[best], count=sizes[best], n_valid=sum(sizes), classes=classes, majority_class=best
    )
