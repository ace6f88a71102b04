"""Pool: seed, files (with clear errors), persistence round trip, eviction, references, diversity ids."""

import json

import numpy as np
import pytest

from opensir_lite.pool import POOL_FILE, PoolFileError, ProblemPool, ProblemRecord


def _pool_with(n: int, max_size=None) -> ProblemPool:
    pool = ProblemPool.from_seed(max_size=max_size)
    records = [ProblemRecord(id=pool.new_id(), problem=f"problem number {i}", in_pool=True, step=1) for i in range(n)]
    pool.add(records, {r.id: np.full(3, r.id, dtype=np.float32) for r in records})
    return pool


def test_seed_pool():
    pool = ProblemPool.from_seed()
    assert [r.problem for r in pool.entries] == ["What is 1+1?"]
    assert pool.entries[0].source == "seed"


def test_save_load_round_trip(tmp_path):
    pool = _pool_with(3)
    pool.add([ProblemRecord(id=pool.new_id(), problem="", legal=False, reason="no_problem")])  # history only
    pool.save(tmp_path)
    again = ProblemPool.from_jsonl(tmp_path / POOL_FILE)
    assert [r.problem for r in again.entries] == [r.problem for r in pool.entries]
    assert len(again.history) == len(pool.history) == 5
    assert set(again.embeddings) == {1, 2, 3}  # cached embeddings come back, the seed had none
    assert np.array_equal(again.embeddings[2], pool.embeddings[2])
    assert again.new_id() == 5  # ids continue after the largest


def test_eviction_keeps_the_newest():
    pool = _pool_with(4, max_size=3)
    assert [r.id for r in pool.entries] == [2, 3, 4]  # seed and problem 1 evicted
    assert 1 not in pool.embeddings
    assert len(pool.history) == 5  # history keeps everything


def test_sample_references_and_empty_pool():
    pool = _pool_with(2)
    refs = pool.sample_references(50, np.random.default_rng(0))
    assert {r.id for r in refs} == {0, 1, 2}
    empty = ProblemPool([ProblemRecord(id=0, problem="old one", in_pool=False)])
    with pytest.raises(ValueError, match="empty"):
        empty.sample_references(1, np.random.default_rng(0))


def test_diversity_ids():
    pool = _pool_with(5)
    assert pool.diversity_ids(None) == [0, 1, 2, 3, 4, 5]  # whole pool
    assert pool.diversity_ids(2, reference_ids=[0, 5]) == [4, 5, 0]  # newest 2 plus references


def test_minimal_jsonl_is_accepted(tmp_path):
    path = tmp_path / "initial.jsonl"
    path.write_text(
        '{"question": "What is 2+2 times 3?"}\n\n{"problem": "Find x if 2x = 8.", "concepts": "linear equations"}\n'
    )
    pool = ProblemPool.from_jsonl(path)
    assert [r.problem for r in pool.entries] == ["What is 2+2 times 3?", "Find x if 2x = 8."]
    assert pool.entries[1].concepts == ["linear equations"]


BAD_FILES = [
    # (content, message fragment)
    ('{"problem": "ok problem here"}\nnot json\n', ":2: not valid JSON"),  # line number named
    ('["a list"]\n', ":1: expected a JSON object"),  # wrong type
    ('{"text": "no problem field"}\n', ":1: missing a non-empty 'problem'"),  # wrong field
    ('{"problem": "x is fine here", "legal": false}\n', "no problem in it is in the pool"),  # nothing usable
]


@pytest.mark.parametrize("content,message", BAD_FILES)
def test_bad_pool_files(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(PoolFileError, match=message):
        ProblemPool.from_jsonl(path)


def test_missing_pool_file(tmp_path):
    with pytest.raises(PoolFileError, match="not found"):
        ProblemPool.from_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(PoolFileError, match="not found: no-such-pool"):
        ProblemPool.from_jsonl("no-such-pool")  # neither a file nor a shipped pool


def test_shipped_pools_resolve_by_name(tmp_path, monkeypatch):
    from opensir_lite.pool import SHIPPED_POOLS, resolve_pool_path, shipped_pool_names

    names = shipped_pool_names()
    assert names, "the package ships at least one initial pool"
    for name in names:
        path = SHIPPED_POOLS / f"{name}.jsonl"
        assert resolve_pool_path(name) == path == resolve_pool_path(f"{name}.jsonl")  # with or without the suffix
        pool = ProblemPool.from_jsonl(name)
        assert len(pool.entries) > 1 and all(r.problem.strip() for r in pool.entries)
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{names[0]}.jsonl").write_text('{"problem": "a local file wins"}\n')
    assert ProblemPool.from_jsonl(f"{names[0]}.jsonl").entries[0].problem == "a local file wins"


def test_saved_lines_parse(tmp_path):
    _pool_with(2).save(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / POOL_FILE).read_text().splitlines()]
    assert {
        "id",
        "problem",
        "step",
        "concepts",
        "legal",
        "reason",
        "in_pool",
        "solve_rate",
        "majority_answer",
        "rewards",
    } <= set(rows[0])
