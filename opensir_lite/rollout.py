"""The one TRL ``rollout_func`` adapter: plays a round of a source (self-play or the gold control) per call.

A source implements :class:`RoundSource`: ``play(sampler, step, use_system_prompt) -> Round`` and the state a
checkpoint keeps. :class:`Rollout` is what ``GRPOTrainer(rollout_func=...)`` calls: it checks the number of rows
TRL expects, builds the round's sampler from the trainer (the policy, or the model ``rollout_model`` returns; TRL's
vLLM integration with ``generation_backend: vllm``), runs the optional ``before_round`` hook (the label probe of
:mod:`opensir_lite.probe`), plays the round and keeps its metrics in ``round_stats`` for the training callbacks.
Everything it needs is passed in when it is built; nothing is patched in later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from opensir_lite.pool import ProblemPool
from opensir_lite.prompts import supports_system_prompt
from opensir_lite.round import Round
from opensir_lite.sampling import Sampler, TransformersSampler, VLLMSampler


class RoundSource(Protocol):
    """What the rollout adapter plays: self-play (:class:`opensir_lite.selfplay.SelfPlay`) or the gold control
    (:class:`opensir_lite.control.GoldControl`)."""

    args: Any
    pool: ProblemPool
    rows_per_round: int

    def play(self, sample: Sampler, step: int, use_system_prompt: bool) -> Round: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def take_evidence(self) -> list[dict[str, Any]]: ...


class Rollout:
    """TRL's ``rollout_func``: ``rollout(prompts, trainer)`` plays one round of ``source`` and returns its rows.

    ``rollout_model`` maps the trainer to the model that samples (default: the unwrapped policy;
    :class:`opensir_lite.training.MergedRolloutModel` is the fast copy); ``before_round`` is called with
    ``(model, tokenizer, step, use_system_prompt)`` before each round and its dict joins the round's metrics."""

    def __init__(
        self,
        source: RoundSource,
        rollout_model: Callable[[Any], Any] | None = None,
        before_round: Callable[..., dict[str, Any]] | None = None,
    ):
        self.source = source
        self.args = source.args
        self.rollout_model = rollout_model
        self.before_round = before_round
        self.use_system_prompt: bool | None = source.args.use_system_prompt
        self.round_stats: list[dict[str, Any]] = []  # metrics of rounds not yet logged (the callbacks take them)

    @property
    def pool(self) -> ProblemPool:
        return self.source.pool

    def state_dict(self) -> dict[str, Any]:
        """The source's state and the system-prompt decision (a collective on several processes)."""
        return {**self.source.state_dict(), "use_system_prompt": self.use_system_prompt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)
        self.use_system_prompt = state.get("use_system_prompt", self.use_system_prompt)

    def take_evidence(self) -> list[dict[str, Any]]:
        return self.source.take_evidence()

    def sampler(self, trainer) -> Sampler:
        """The round's sampler, built from the trainer."""
        if self.rollout_model is not None:
            model = self.rollout_model(trainer)
        else:
            model = trainer.accelerator.unwrap_model(trainer.model)
        if getattr(self.args, "generation_backend", "transformers") == "vllm":
            return VLLMSampler(trainer.vllm_generation, model, trainer.processing_class, self.args)
        return TransformersSampler(model, trainer.processing_class, self.args)

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        expected = self.source.rows_per_round
        if len(prompts) != expected:
            raise ValueError(
                f"rollout received {len(prompts)} rows but a round makes {expected} "
                "((num_teacher_groups + num_student_groups) * num_generations) on each process; "
                "leave generation_batch_size and steps_per_generation unset"
            )
        sample = self.sampler(trainer)
        step = trainer.state.global_step + 1
        if self.use_system_prompt is None:
            self.use_system_prompt = supports_system_prompt(sample.tokenizer)
        extra = {}
        if self.before_round is not None:
            extra = self.before_round(sample.model, sample.tokenizer, step, self.use_system_prompt)
        rnd = self.source.play(sample, step, self.use_system_prompt)
        rnd.stats.update(extra)
        self.round_stats.append(rnd.stats)
        return {**rnd.rows, "logprobs": None}  # HF generate gives no sampling logprobs; TRL then needs none
