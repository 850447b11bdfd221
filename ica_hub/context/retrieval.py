"""Choosing the demonstrations: the k nearest holdout examples per row, or one fixed set.

Nearest uses cosine similarity of sentence embeddings of the questions (the last user turn).
A row never gets as a demonstration a holdout example with the same question or the same
response: when the holdout is also inside the training pool, that example would otherwise be
scored with its own answer in the prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ica_hub.data.formats import ParsedRow

logger = logging.getLogger(__name__)


def _text_key(text: str) -> str:
    return " ".join(text.split()).lower()


class DemonstrationIndex:
    """Demonstration candidates (holdout rows, or pool rows for a contrastive baseline)."""

    def __init__(self, rows: Sequence[ParsedRow], embedder_name: str, device: str = "cpu"):
        self.rows = list(rows)
        self.embedder_name = embedder_name
        self.device = device
        self._embedder = None
        self._embeddings: np.ndarray | None = None
        self._question_keys = [_text_key(row.question) for row in self.rows]
        self._response_keys = [_text_key(row.responses[0]) for row in self.rows]

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            from ica_hub.models import load_embedder

            self._embedder = load_embedder(self.embedder_name, device=self.device)
        return self._embedder.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )

    @property
    def embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            self._embeddings = self._embed([row.question for row in self.rows])
        return self._embeddings

    def same_text_mask(self, rows: Sequence[ParsedRow]) -> np.ndarray:
        """(rows, candidates) True where a candidate has a row's question or response."""
        mask = np.zeros((len(rows), len(self.rows)), dtype=bool)
        question_at, response_at = {}, {}
        for j, (q, r) in enumerate(zip(self._question_keys, self._response_keys)):
            question_at.setdefault(q, []).append(j)
            response_at.setdefault(r, []).append(j)
        for i, row in enumerate(rows):
            mask[i, question_at.get(_text_key(row.question), [])] = True
            for response in row.responses:
                mask[i, response_at.get(_text_key(response), [])] = True
        return mask

    def nearest(self, rows: Sequence[ParsedRow], k: int) -> list[list[int]]:
        """Per row, the indices of its k most similar candidates, most similar first."""
        if not rows:
            return []
        similarity = self._embed([row.question for row in rows]) @ self.embeddings.T
        similarity[self.same_text_mask(rows)] = -np.inf
        k = min(k, similarity.shape[1])
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        out = []
        for i, candidates in enumerate(top):
            ranked = candidates[np.argsort(-similarity[i, candidates], kind="stable")]
            out.append([int(j) for j in ranked if np.isfinite(similarity[i, j])])
        return out

    def fixed(self, rows: Sequence[ParsedRow], order: Sequence[int], k: int) -> list[list[int]]:
        """Per row, the first k candidates of ``order`` that are not the row itself."""
        excluded = self.same_text_mask(rows)
        out = []
        for i in range(len(rows)):
            out.append([j for j in order if not excluded[i, j]][:k])
        return out
