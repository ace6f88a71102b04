"""Row loaders for the lm-eval tasks of this folder (``custom_dataset: !function data.<name>``).

The harness calls them with the task's ``metadata`` (and ``--metadata`` / ``TaskManager(metadata=...)``) as
keyword arguments: ``data_dir`` (the offline copies; none: the Hub, as ``scripts/evaluate.py``), ``limit`` (rows of the
subset, none: all), ``seed`` (the subset's seed, 0) and ``holdout`` (GSM8K few-shot rows come from outside every
subset of up to this many rows, 500). Other keys (the harness adds its own, such as ``version``) are ignored. Each row
keeps the benchmark's own fields plus ``opensir_index``, the row number ``scripts/evaluate.py`` reports.
"""

from __future__ import annotations

from typing import Any

import datasets

from opensir_lite.evaluation.benchmarks import (
    GOLD_HOLDOUT,
    BenchmarkError,
    Item,
    load_items,
    subset,
    training_items,
)
from opensir_lite.peer_tasks import peer_doc


def _rows(items: list[Item]) -> list[dict[str, Any]]:
    return [peer_doc(it) for it in items]


def _split(rows: list[dict[str, Any]]) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows)


def _test_items(name: str, data_dir: str | None, limit: int | None, seed: int) -> tuple[str, list[Item]]:
    bench, items, _ = load_items(name, data_dir)
    return bench, subset(items, None if limit is None else int(limit), int(seed), bench)


def gsm8k(
    data_dir: str | None = None, limit: int | None = None, seed: int = 0, holdout: int = GOLD_HOLDOUT, **_: Any
) -> datasets.DatasetDict:
    """GSM8K: ``test`` is the evaluation subset; ``train`` (the few-shot pool) holds the rows that no subset of up
    to ``holdout`` rows of this seed and no probe row contains."""
    if limit is not None and int(limit) > int(holdout):
        raise BenchmarkError(f"limit {limit} > holdout {holdout}: the few-shot rows would overlap the evaluated ones")
    bench, test = _test_items("gsm8k", data_dir, limit, seed)
    _, items, _ = load_items("gsm8k", data_dir)
    shots = training_items(items, bench, holdout=int(holdout), seed=int(seed))
    return datasets.DatasetDict({"test": _split(_rows(test)), "train": _split(_rows(shots))})


def gsm8k_test_only(
    data_dir: str | None = None, limit: int | None = None, seed: int = 0, **_: Any
) -> datasets.DatasetDict:
    """GSM8K's evaluation subset alone (tasks whose exemplars are fixed in the YAML)."""
    _, test = _test_items("gsm8k", data_dir, limit, seed)
    return datasets.DatasetDict({"test": _split(_rows(test))})


def asdiv(data_dir: str | None = None, limit: int | None = None, seed: int = 0, **_: Any) -> datasets.DatasetDict:
    """ASDiv's evaluation subset. The offline copy joins body and question in ``question``; the harness's template
    reads ``body`` when it is defined, so it is left out and the joined text goes in whole."""
    _, test = _test_items("asdiv", data_dir, limit, seed)
    return datasets.DatasetDict({"test": _split(_rows(test))})
