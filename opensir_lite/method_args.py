"""The method's arguments, by consumer: what OpenSIR self-play is (pool, teacher, student, scores, the program
check), what the gold-label control is, and what a run watches (the label probe, the stop rule, evidence). Plain
dataclasses with ``help`` metadata, combined with TRL's ``GRPOConfig`` in :class:`opensir_lite.config.SelfPlayConfig`
and read by ``TrlParser``. Each checks its own fields (``errors``) and imports nothing that runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opensir_lite.label_rules import RULES_BY_NAME
from opensir_lite.parsing import ANSWER_EXTRACTIONS, ANSWER_VOTES
from opensir_lite.prompts import SEED_PROBLEM, TEACHER_FORMAT_HINTS
from opensir_lite.ranges import above, at_least, between, ranged
from opensir_lite.rewards import FORMAT_CREDITS, GATE_LOWER, GATE_UPPER, STUDENT_FORMAT_GATES

METHODS = ("selfplay", "gold")
STUDENT_LABELS = ("majority", "program_confirmed", "program_rule")  # what the student learns from (student_label)
# student_label program_rule's rule: chosen on the selection half, 95.4% precise on the held half of 307 in-gate rows
# (results/qwen0.5b/label-rules)
DEFAULT_LABEL_RULE = "confirm 2 of 4, solve rate >= 0.625"
STOP_RULE_METRICS = ("student_mean_tokens", "student_mean_entropy")  # round metrics a stop rule may watch


def parse_append_strategy(strategy: str) -> int | None:
    """None for ``all_legal``, 0 for ``never``, x for ``top-x``; ValueError otherwise."""
    if strategy == "all_legal":
        return None
    if strategy == "never":
        return 0
    if strategy.startswith("top-") and strategy[4:].isdigit() and int(strategy[4:]) > 0:
        return int(strategy[4:])
    raise ValueError(f"pool_append_strategy must be 'all_legal', 'never' or 'top-<x>', got {strategy!r}")


def _one_of(name: str, value, allowed) -> list[str]:
    return [] if value in allowed else [f"{name} must be one of {', '.join(allowed)}, got {value!r}"]


@dataclass
class SelfPlayArguments:
    """OpenSIR self-play: the pool, the teacher and the student (paper defaults unless a comment says otherwise)."""

    method: str = field(
        default="selfplay",
        metadata={
            "help": "'selfplay' (OpenSIR: teacher and student, no labels) or 'gold' (the control: plain GRPO on "
            "labelled problems of gold_benchmark, rewarded by the gold answer; no teacher, no pool)."
        },
    )
    # ---- pool ----
    seed_problem: str = field(default=SEED_PROBLEM, metadata={"help": "The single seed problem of a new pool."})
    initial_pool_path: str | None = field(
        default=None,
        metadata={
            "help": "JSONL pool to start from (pool.jsonl of a run, or seed_pool.py output), or the name of a pool "
            "shipped in opensir_lite/data/pools (e.g. qwen0.5b-official)."
        },
    )
    pool_append_strategy: str = field(
        default="all_legal", metadata={"help": "Which new problems join the pool: all_legal, top-<x> or never."}
    )
    near_duplicate_cosine: float | None = field(
        default=None,
        metadata={
            "help": ranged(
                between(0, 1, low_open=True),
                "A legal problem whose embedding has at least this cosine similarity to a pool problem or to "
                "another problem of its round is a near-duplicate: it earns no solvability and does not join the pool. "
                "None: no such rule (paper).",
            )
        },
    )
    pool_max_size: int | None = field(
        default=None,
        metadata={"help": ranged(at_least(1), "Largest pool size; the oldest entries are evicted. None: unlimited.")},
    )
    # ---- teacher ----
    num_teacher_groups: int = field(
        default=1,
        metadata={
            "help": ranged(
                at_least(1),
                "Teacher groups (of num_generations rows) trained per step. Paper: 8 rows = 1.",
            )
        },
    )
    teacher_upscale_ratio: int = field(
        default=4,
        metadata={
            "help": ranged(
                at_least(1),
                "Generate this many times more teacher groups; keep the highest-variance ones.",
            )
        },
    )
    teacher_max_new_tokens: int = field(
        default=1024, metadata={"help": ranged(at_least(1), "Token budget of a teacher completion.")}
    )
    teacher_format_hint: str = field(
        default="none",
        metadata={
            "help": "Format help in the teacher prompt: 'none' (paper), 'placeholders' (the tag layout with ... "
            "appended) or 'example' (one worked request and reply before the real one)."
        },
    )
    teacher_format_credit: str = field(
        default="official",
        metadata={
            "help": "teacher_format reward: 'official' (1 for a legal output with a <think> block, else 0) or "
            "'partial' (a third for each of the think, problem and concepts tag pairs, legal or not)."
        },
    )
    teacher_prefill: str = field(
        default="",
        metadata={"help": "Text the teacher reply starts with, e.g. '<think>' (a prompt, not trained; paper: '')."},
    )
    teacher_reward_weights: list[float] = field(
        default_factory=lambda: [1.0, 1.0, 0.1, 1.0],
        metadata={
            "help": ranged(
                at_least(0),
                "Weights of solvability, diversity, teacher_format, response_length (paper).",
            )
        },
    )
    # ---- student ----
    num_student_groups: int = field(
        default=1,
        metadata={
            "help": ranged(
                at_least(0),
                "Student problems (groups of num_generations rows) trained per step (paper 1).",
            )
        },
    )
    student_selection: str = field(
        default="top", metadata={"help": "Student problems: 'top' combined score (paper) or 'random' legal ones."}
    )
    student_max_new_tokens: int = field(
        default=1024, metadata={"help": ranged(at_least(1), "Token budget of a student completion.")}
    )
    answer_extraction: str = field(
        default="latex",
        metadata={
            "help": "How a student answer is read: 'latex' (official training: boxed, else an anchored LaTeX "
            "answer), 'latex_expr' (official evaluation: also 'The answer is 18.'), 'boxed' (the last box only)."
        },
    )
    answer_vote: str = field(
        default="string",
        metadata={
            "help": "Majority vote classes: 'string' (official: equal math-verify normal forms) or 'equivalence' "
            "(math-verify verify; merges 3.0 and 3)."
        },
    )
    student_reward_weights: list[float] = field(
        default_factory=lambda: [1.0, 0.1],
        metadata={"help": ranged(at_least(0), "Weights of accuracy and student_format (paper).")},
    )
    student_format_gate: str = field(
        default="none",
        metadata={
            "help": "When student_format scores a row: 'none' (paper: always) or 'accuracy_variance' (only in groups "
            "whose accuracy reward varies; elsewhere it is None, so a group that agrees on its accuracy gets no "
            "format-only advantage from the std-normalised 0.1 format reward)."
        },
    )

    def selfplay_errors(self) -> list[str]:
        """One line per field of this group that cannot run."""
        errors = _one_of("method", self.method, METHODS)
        try:
            parse_append_strategy(self.pool_append_strategy)
        except ValueError as e:
            errors.append(str(e))
        errors += _one_of("answer_extraction", self.answer_extraction, ANSWER_EXTRACTIONS)
        errors += _one_of("answer_vote", self.answer_vote, ANSWER_VOTES)
        errors += _one_of("teacher_format_hint", self.teacher_format_hint, TEACHER_FORMAT_HINTS)
        errors += _one_of("teacher_format_credit", self.teacher_format_credit, FORMAT_CREDITS)
        errors += _one_of("student_format_gate", self.student_format_gate, STUDENT_FORMAT_GATES)
        errors += _one_of("student_selection", self.student_selection, ("top", "random"))
        if len(self.teacher_reward_weights) != 4 or len(self.student_reward_weights) != 2:
            errors.append("teacher_reward_weights needs 4 values and student_reward_weights 2")
        return errors


@dataclass
class ScoreArguments:
    """How the teacher's problems are scored: the solvability gate, novelty and the combined score."""

    solve_rate_lower: float = field(
        default=GATE_LOWER,
        metadata={"help": ranged(between(0, 1), "Solvability gate: lowest rewarded solve rate (paper 0.5).")},
    )
    solve_rate_upper: float = field(
        default=GATE_UPPER,
        metadata={"help": ranged(between(0, 1), "Solvability gate: highest rewarded solve rate (paper 0.9).")},
    )
    novelty_top_k: int = field(
        default=5, metadata={"help": ranged(at_least(1), "Novelty: mean of this many top cosine similarities.")}
    )
    diversity_recent_pool_size: int | None = field(
        default=None,
        metadata={
            "help": ranged(
                at_least(1),
                "Novelty against only the newest N pool entries plus the references. None: whole pool.",
            )
        },
    )
    difficulty_score_weight: float = field(
        default=1.0, metadata={"help": ranged(at_least(0), "Weight of solvability in the combined score.")}
    )
    diversity_score_weight: float = field(
        default=1.0, metadata={"help": ranged(at_least(0), "Weight of novelty in the combined score.")}
    )
    response_length_cap: float | None = field(
        default=1000.0, metadata={"help": ranged(above(0), "Cap on mean student tokens.")}
    )
    response_length_baseline: float = field(
        default=1000.0, metadata={"help": ranged(above(0), "Mean student tokens worth reward 1.")}
    )

    def score_errors(self) -> list[str]:
        return ["need solve_rate_lower <= solve_rate_upper"] if self.solve_rate_lower > self.solve_rate_upper else []


@dataclass
class ProgramCheckArguments:
    """The program check: a measurement of the majority labels, or the filter of what the student learns from."""

    program_check: bool = field(
        default=False,  # off: it costs one greedy program completion per legal problem (docs/programs.md)
        metadata={
            "help": "Per round, the policy writes a Python program for each legal problem with a majority answer; "
            "the sandbox runs it and programs/... in metrics.jsonl (and the round evidence) say how often its "
            "printed answer agrees with the student majority. Measurement only: no reward, no filter."
        },
    )
    student_label: str = field(
        default="majority",  # the paper: the student's own majority answer, unchecked
        metadata={
            "help": "The student's training label. 'majority' (paper): the majority answer of its G samples. "
            "'program_confirmed': the policy also writes a Python program for each answered problem (the program "
            "check, run in the sandbox); the student trains only on problems whose program printed the majority "
            "answer, and the teacher's solvability counts only such problems (docs/programs.md). 'program_rule': "
            "the rule named by label_rule reads k sampled programs per answered problem and keeps, drops or changes "
            "the label (docs/programs.md)."
        },
    )
    label_rule: str = field(
        default=DEFAULT_LABEL_RULE,
        metadata={
            "help": "student_label program_rule: one of opensir_lite.label_rules.RULES by name, e.g. 'confirm 2 "
            "of 4' (at least 2 of 4 sampled programs print the label) or 'weighted x4 by 4' (answers a program "
            "prints count 4 times in the vote); its k programs per problem are its cost."
        },
    )
    program_max_new_tokens: int = field(
        default=384,  # the coder model's programs for pool problems are 60-200 tokens
        metadata={"help": ranged(at_least(1), "Token budget of a program completion (program check).")},
    )
    allow_unisolated_sandbox: bool = field(
        default=False,  # refuse where no network namespace can be made
        metadata={
            "help": "Run model-written programs even where the sandbox cannot make its namespaces (no network "
            "or file-system isolation then; the limits, empty environment and empty folder still apply)."
        },
    )

    @property
    def runs_programs(self) -> bool:
        """Whether rounds run the program check: as a measurement (program_check) or as the label filter."""
        return bool(self.program_check) or self.student_label in ("program_confirmed", "program_rule")

    def program_errors(self, method: str) -> list[str]:
        errors = _one_of("student_label", self.student_label, STUDENT_LABELS)
        if not errors and self.student_label != "majority" and method != "selfplay":
            errors.append(
                f"student_label {self.student_label} applies to method selfplay (the gold control has labels)"
            )
        if self.label_rule not in RULES_BY_NAME:
            errors.append(f"label_rule {self.label_rule!r} is not a rule; choose from: {', '.join(RULES_BY_NAME)}")
        return errors


@dataclass
class GoldControlArguments:
    """The gold-label control (``method: gold``): plain GRPO on labelled problems, rewarded by the gold answer."""

    gold_benchmark: str = field(
        default="gsm8k", metadata={"help": "method gold: the labelled benchmark to train on (a name or a .jsonl)."}
    )
    gold_data_dir: str | None = field(
        default=None, metadata={"help": "method gold: folder of the benchmark's JSONL file (None or '': the Hub)."}
    )
    gold_candidates: int = field(
        default=0,
        metadata={
            "help": ranged(
                at_least(0),
                "method gold: labelled problems sampled per step, of which the num_student_groups whose groups have "
                "accuracy variance are trained (then the rest in order), as self-play trains in-gate problems. "
                "0: num_student_groups (every sampled problem is trained).",
            )
        },
    )
    gold_holdout: int = field(
        default=500,
        metadata={
            "help": ranged(
                at_least(0),
                "method gold: train on the rows after the first N of the seed-0 evaluation order, so that every "
                "seed-0 evaluation subset of up to N rows (and the probe) stays out of training.",
            )
        },
    )

    def gold_errors(self, method: str, num_student_groups: int) -> list[str]:
        if method != "gold":
            return []
        if num_student_groups < 1:
            return ["method gold trains student groups only: set num_student_groups >= 1"]
        if 0 < self.gold_candidates < num_student_groups:
            return ["gold_candidates must be 0 or at least num_student_groups"]
        return []


@dataclass
class WatchArguments:
    """What a run watches and keeps: the label probe, the pre-registered stop rule, round evidence, plots."""

    probe_every: int = field(
        default=0,
        metadata={
            "help": ranged(
                at_least(0),
                "Every N steps (and at the first and last), vote on the labelled GSM8K probe and log pseudo-label "
                "quality (probe/majority_correct, probe/solve_rate). 0: off.",
            )
        },
    )
    probe_rows: int = field(
        default=32, metadata={"help": ranged(between(1, 32), "Probe questions (at most the 32 shipped GSM8K rows).")}
    )
    probe_samples: int = field(
        default=0, metadata={"help": ranged(at_least(0), "Answers per probe question. 0: num_generations.")}
    )
    stop_rule_metrics: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Pre-registered stop rule: end the run (with a checkpoint) once any of these round metrics falls "
            "below stop_rule_ratio x its value at step 1, e.g. [student_mean_tokens, student_mean_entropy]. "
            "Empty: off."
        },
    )
    stop_rule_ratio: float = field(
        default=0.5, metadata={"help": ranged(between(0, 1, low_open=True), "The stop rule's fraction of step 1.")}
    )
    evidence_completion_chars: int = field(
        default=300,
        metadata={
            "help": ranged(
                at_least(-1),
                "round_evidence.jsonl keeps the last N characters of each student completion beside its "
                "answer and vote class (0: answers only; -1: no evidence file).",
            )
        },
    )
    write_plots: bool = field(
        default=True,
        metadata={
            "help": "At the end, write training_curves.png and explore/ (pool report and figures) in output_dir."
        },
    )

    def watch_errors(self) -> list[str]:
        unknown = [m for m in self.stop_rule_metrics if m not in STOP_RULE_METRICS]
        return (
            [f"stop_rule_metrics: unknown {unknown[0]!r}; choose from {', '.join(STOP_RULE_METRICS)}"]
            if unknown
            else []
        )
