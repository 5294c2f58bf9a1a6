"""Any OpenAI-compatible ``/embeddings`` endpoint, for deployments that already run an embedding service.

The vector size is fixed for an instance: given, or learned from the first answer. A later answer of
another size means the server switched models under us, which would corrupt the index, so it is an error.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np

from ..errors import EmbedderError
from ..http_retry import Sleep, body_tail, post_with_retry
from .base import Vectors, normalise

BATCH = 128


class OpenAICompatEmbedder:
    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str,
        dimensions: int | None = None,
        timeout: float = 60,
        max_retries: int = 3,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.model = model
        self.model_id = f"openai:{model}"
        self.url = base_url.rstrip("/") + "/embeddings"
        self.max_retries = max_retries
        self.timeout = timeout
        self._requested = dimensions  # sent to the server (OpenAI text-embedding-3 can shorten vectors)
        self._dimensions = dimensions
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    @property
    def dimensions(self) -> int:
        """Vector size; when not configured, one probe request learns it (stores need it up front)."""
        if self._dimensions is None:
            self.embed_documents(["dimension probe"])
        assert self._dimensions is not None
        return self._dimensions

    @dimensions.setter
    def dimensions(self, value: int) -> None:  # the Embedder protocol declares a plain attribute
        self._dimensions = value

    def close(self) -> None:
        self._client.close()

    def embed_documents(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimensions or 0), dtype=np.float32)
        parts = [self._batch(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
        return normalise(np.concatenate(parts))

    def embed_query(self, text: str) -> Vectors:
        return self.embed_documents([text])[0]

    def _batch(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        payload: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self._requested:
            payload["dimensions"] = self._requested
        response = post_with_retry(
            self._client,
            self.url,
            payload,
            max_retries=self.max_retries,
            error=EmbedderError,
            what=f"embedder {self.model_id}",
            sleep=self._sleep,
            deadline=self.timeout,  # a server dripping its answer cannot hold a write for longer
        )
        status = response.status_code
        if status in (401, 403):
            raise EmbedderError(
                f"embedder {self.model_id}: HTTP {status} ({body_tail(response)}); "
                "check AMEM_EMBEDDER_API_KEY"
            )
        if status >= 400:
            raise EmbedderError(
                f"embedder {self.model_id}: HTTP {status} from {self.url}: {body_tail(response)}; "
                "check AMEM_EMBEDDER_BASE_URL and the model name"
            )
        try:
            rows = sorted(response.json()["data"], key=lambda r: r["index"])
            vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderError(
                f"embedder {self.model_id}: not an OpenAI embeddings response: {body_tail(response)}"
            ) from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise EmbedderError(
                f"embedder {self.model_id}: asked for {len(texts)} vectors, got shape {vectors.shape}"
            )
        if self._dimensions is None:
            self._dimensions = int(vectors.shape[1])
        elif vectors.shape[1] != self._dimensions:
            raise EmbedderError(
                f"embedder {self.model_id}: got {vectors.shape[1]}-d vectors, expected {self._dimensions}; "
                "the server's model changed - re-embed or fix the configuration"
            )
        return vectors
