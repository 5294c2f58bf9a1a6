"""A deterministic bag-of-words embedder for unit tests: shared words give similar vectors."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from .base import Vectors, normalise

_WORD = re.compile(r"[a-z0-9]+")


class FakeEmbedder:
    supports_batch = True

    def __init__(self, dimensions: int = 64) -> None:
        self.dimensions = dimensions
        self.model_id = f"fake:{dimensions}"

    def _one(self, text: str) -> Vectors:
        vec = np.zeros(self.dimensions, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            idx = int.from_bytes(digest[:4], "little") % self.dimensions
            sign = 1.0 if digest[4] & 1 else -1.0
            vec[idx] += sign
        if not vec.any():
            vec[0] = 1.0
        return vec

    def embed_documents(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return normalise(np.stack([self._one(t) for t in texts]))

    def embed_query(self, text: str) -> Vectors:
        return self.embed_documents([text])[0]
