"""The problem pool: every problem the teacher wrote (legal or not), which of them are in the pool, and their
embeddings, cached once and never recomputed.

On disk a pool is ``pool.jsonl`` (one record per generated problem; ``in_pool`` marks pool membership) and
``pool_embeddings.npz`` (ids and a float32 matrix). Both are written to a temporary file and renamed, so a killed
process never leaves a half-written pool.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from opensir_lite.prompts import SEED_PROBLEM

logger = logging.getLogger(__name__)

POOL_FILE = "pool.jsonl"
EMBEDDINGS_FILE = "pool_embeddings.npz"  # beside pool.jsonl


class PoolFileError(ValueError):
    """A pool file that cannot be read; the message names the file and line."""


@dataclass
class ProblemRecord:
    """One generated (or seed) problem and everything measured about it."""

    id: int
    problem: str
    step: int = 0
    concepts: list[str] = field(default_factory=list)
    legal: bool = True
    reason: str | None = None  # why the problem is illegal, None when legal
    in_pool: bool = False
    source: str = "teacher"  # "seed", "initial" (from a pool file) or "teacher"
    reference_id: int | None = None  # the pool entry shown to the teacher
    solve_rate: float | None = None
    majority_answer: str | None = None
    n_valid_answers: int = 0
    mean_student_tokens: float | None = None
    novelty: float | None = None
    combined_score: float | None = None
    near_duplicate: bool = False  # near_duplicate_cosine: too like a pool problem or another of its round
    label_confirmed: bool | None = None  # student_label program_confirmed: a program's answer equals the majority
    rewards: dict[str, float] = field(default_factory=dict)
    teacher_output: str | None = None  # raw teacher text, kept (truncated) for illegal problems only

    @classmethod
    def from_dict(cls, row: dict, default_id: int) -> ProblemRecord:
        problem = row.get("problem", row.get("question"))
        history_only = row.get("in_pool") is False or row.get("legal") is False
        if not isinstance(problem, str) or not (problem.strip() or history_only):
            raise KeyError("problem")
        known = {k: v for k, v in row.items() if k in cls.__dataclass_fields__}
        known["problem"] = problem
        known.setdefault("id", default_id)
        known.setdefault("in_pool", bool(row.get("legal", True)))
        known.setdefault("source", "initial")
        concepts = known.get("concepts") or []
        if isinstance(concepts, str):
            concepts = [c.strip() for c in concepts.split(",") if c.strip()]
        known["concepts"] = list(concepts)
        return cls(**known)


def read_rows_by_id(path: Path) -> dict[int, dict]:
    """The JSON objects of a per-problem side file (round evidence, program checks) keyed by their integer ``id``;
    lines that do not parse (one cut by a crash) are skipped and the last row of an id wins. {} without the file."""
    out: dict[int, dict] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("id"), int):
                out[row["id"]] = row
    return out


def read_jsonl_objects(path: Path, error: type[Exception]) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; ``error`` names the file and line of a bad one."""
    if not path.is_file():
        raise error(f"file not found: {path}")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{lineno}: expected a JSON object")
            rows.append((lineno, row))
    return rows


def embeddings_path(pool_path: Path) -> Path:
    """``pool.jsonl`` -> ``pool_embeddings.npz``; ``seed.jsonl`` -> ``seed_embeddings.npz``."""
    return pool_path.with_name(pool_path.stem + "_embeddings.npz")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


SHIPPED_POOLS = Path(__file__).parent / "data" / "pools"  # initial pools shipped as package data (README there)


def shipped_pool_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED_POOLS.glob("*.jsonl"))


def resolve_pool_path(path: str | Path) -> Path:
    """A pool file's path: ``path`` itself when it is a file, else the shipped pool of that name
    (``opensir_lite/data/pools/<name>.jsonl``, with or without the suffix), else ``path`` unchanged (the caller
    reports it missing)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    name = candidate.name if candidate.suffix == ".jsonl" else candidate.name + ".jsonl"
    if str(candidate.parent) in ("", ".") and (SHIPPED_POOLS / name).is_file():
        return SHIPPED_POOLS / name
    return candidate


class ProblemPool:
    """Pool entries (oldest first), the history of every generated problem, and cached embeddings."""

    def __init__(self, records: Iterable[ProblemRecord] = (), max_size: int | None = None):
        self.history: list[ProblemRecord] = list(records)
        self.max_size = max_size or None
        self.embeddings: dict[int, np.ndarray] = {}
        self._next_id = max((r.id for r in self.history), default=-1) + 1
        self._evict()

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_seed(cls, problem: str = SEED_PROBLEM, max_size: int | None = None) -> ProblemPool:
        return cls([ProblemRecord(id=0, problem=problem, in_pool=True, source="seed")], max_size=max_size)

    @classmethod
    def from_jsonl(cls, path: str | Path, max_size: int | None = None) -> ProblemPool:
        """Read a pool file (ours, or any JSONL with a ``problem`` or ``question`` field per line), or a pool
        shipped with the package, by name (:func:`resolve_pool_path`)."""
        path = resolve_pool_path(path)
        if not path.is_file():
            raise PoolFileError(f"pool file not found: {path}")
        records: list[ProblemRecord] = []
        for lineno, row in read_jsonl_objects(path, PoolFileError):
            try:
                records.append(ProblemRecord.from_dict(row, default_id=len(records)))
            except KeyError:
                raise PoolFileError(f"{path}:{lineno}: missing a non-empty 'problem' (or 'question') field") from None
            except TypeError as e:
                raise PoolFileError(f"{path}:{lineno}: bad field ({e})") from None
        if len({r.id for r in records}) != len(records):
            raise PoolFileError(f"{path}: duplicate ids")
        pool = cls(records, max_size=max_size)
        if not pool.entries:
            raise PoolFileError(f"{path}: no problem in it is in the pool")
        emb_path = embeddings_path(path)
        if emb_path.is_file():
            pool.load_embeddings(emb_path)
        return pool

    # ---- views --------------------------------------------------------------------------------------------
    @property
    def entries(self) -> list[ProblemRecord]:
        return [r for r in self.history if r.in_pool]

    def __len__(self) -> int:
        return len(self.entries)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    @property
    def next_id(self) -> int:
        """The id the next new record gets (every rank of a multi-process run sees the same value)."""
        return self._next_id

    # ---- sampling and growth ------------------------------------------------------------------------------
    def sample_references(self, n: int, rng: np.random.Generator) -> list[ProblemRecord]:
        """``n`` reference problems, each drawn uniformly from the pool (one in-context example per prompt)."""
        entries = self.entries
        if not entries:
            raise ValueError("the problem pool is empty")
        return [entries[i] for i in rng.integers(0, len(entries), size=n)]

    def add(self, records: Sequence[ProblemRecord], embeddings: dict[int, np.ndarray] | None = None) -> None:
        """Record generated problems; those with ``in_pool`` join the pool (oldest evicted past ``max_size``)."""
        self.history.extend(records)
        for r in records:
            self._next_id = max(self._next_id, r.id + 1)
            if embeddings and r.id in embeddings:
                self.embeddings[r.id] = np.asarray(embeddings[r.id], dtype=np.float32)
        self._evict()

    def _evict(self) -> None:
        if not self.max_size:
            return
        entries = self.entries
        for r in entries[: max(0, len(entries) - self.max_size)]:
            r.in_pool = False
            self.embeddings.pop(r.id, None)

    # ---- embeddings ---------------------------------------------------------------------------------------
    def ensure_embeddings(self, embed: Callable[[list[str]], np.ndarray]) -> int:
        """Embed the pool entries that have no cached embedding; returns how many were computed."""
        missing = [r for r in self.entries if r.id not in self.embeddings]
        if missing:
            vectors = embed([r.problem for r in missing])
            for r, v in zip(missing, vectors, strict=True):
                self.embeddings[r.id] = np.asarray(v, dtype=np.float32)
        return len(missing)

    def embedding_matrix(self, ids: Sequence[int]) -> np.ndarray:
        """Stacked cached embeddings for ``ids`` (shape (0, 0) when empty)."""
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.embeddings[i] for i in ids])

    def diversity_ids(self, recent: int | None, reference_ids: Iterable[int] = ()) -> list[int]:
        """Pool ids the novelty is measured against: all entries, or the ``recent`` newest plus the references."""
        entries = self.entries
        if recent is None:
            return [r.id for r in entries]
        chosen = [r.id for r in entries[-recent:]] if recent > 0 else []
        in_pool = {r.id for r in entries}
        for i in reference_ids:
            if i in in_pool and i not in chosen:
                chosen.append(i)
        return chosen

    # ---- persistence --------------------------------------------------------------------------------------
    def save(self, target: str | Path) -> Path:
        """Write the pool atomically: ``target`` is a folder (-> ``pool.jsonl``) or a ``.jsonl`` path; the
        embeddings go beside it (``<stem>_embeddings.npz``). Returns the pool file."""
        target = Path(target)
        path = target if target.suffix == ".jsonl" else target / POOL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = np.array(sorted(self.embeddings), dtype=np.int64)
        matrix = self.embedding_matrix(list(ids)) if len(ids) else np.zeros((0, 0), dtype=np.float32)
        by_id = {r.id: r for r in self.history}
        digests = np.array([_digest(by_id[i].problem) if i in by_id else "" for i in ids.tolist()], dtype="U40")
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, ids=ids, embeddings=matrix, digests=digests)
        os.replace(tmp, embeddings_path(path))
        lines = "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in self.history)
        atomic_write_text(path, lines)
        return path

    def load_embeddings(self, path: str | Path) -> int:
        """Load cached embeddings of pool entries; returns how many were kept.

        A vector is kept only for an id in the pool whose problem text has the digest stored with it, so an
        embeddings file left from another state of the run (a crash between the two renames) is never trusted;
        whatever is missing is recomputed on the next round."""
        in_pool = {r.id: r for r in self.entries}
        kept = 0
        try:
            with np.load(path, allow_pickle=False) as data:
                ids, vectors = data["ids"].tolist(), data["embeddings"]
                digests = data["digests"].tolist() if "digests" in data.files else [None] * len(ids)
                for i, v, d in zip(ids, vectors, digests, strict=True):
                    record = in_pool.get(int(i))
                    if record is not None and (d is None or d == _digest(record.problem)):
                        self.embeddings[int(i)] = np.asarray(v, dtype=np.float32)
                        kept += 1
        except (OSError, ValueError, KeyError) as e:  # a damaged cache costs a recomputation, nothing more
            logger.warning("ignoring unreadable pool embeddings %s (%s)", path, e)
        return kept


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", errors="replace")).hexdigest()
