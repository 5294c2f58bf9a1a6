"""The embedder seam. Vectors are float32 and L2-normalised so a dot product is a cosine."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    model_id: str
    dimensions: int

    def embed_documents(self, texts: list[str]) -> Vectors:
        """Shape (len(texts), dimensions), rows L2-normalised."""
        ...

    def embed_query(self, text: str) -> Vectors:
        """Shape (dimensions,), L2-normalised."""
        ...


def normalise(vectors: npt.NDArray[np.floating]) -> Vectors:
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return (arr / norms).astype(np.float32)
