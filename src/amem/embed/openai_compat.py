"""Any OpenAI-compatible ``/embeddings`` endpoint, for deployments that already run an embedding service.

The vector size is fixed for an instance: given, or learned from the first answer. A later answer of
another size means the server switched models under us, which would corrupt the index, so it is an error.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Any

import httpx
import numpy as np

from ..errors import EmbedderError
from ..http_retry import ASleep, Sleep, apost_with_retry, body_tail, post_with_retry
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
        asleep: ASleep = asyncio.sleep,
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
        self._headers = headers
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._asleep = asleep

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

    async def aembed_documents(self, texts: list[str]) -> Vectors:
        """``embed_documents`` awaited: the request waits on the event loop, not on a thread."""
        if not texts:
            return np.zeros((0, self._dimensions or 0), dtype=np.float32)
        parts = [await self._abatch(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
        return normalise(np.concatenate(parts))

    async def aembed_query(self, text: str) -> Vectors:
        return (await self.aembed_documents([text]))[0]

    async def aclose(self) -> None:
        """Closes this event loop's async client (another loop's goes with its loop)."""
        with self._lock:
            client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _payload(self, texts: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self._requested:
            payload["dimensions"] = self._requested
        return payload

    def _batch(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        response = post_with_retry(
            self._client,
            self.url,
            self._payload(texts),
            max_retries=self.max_retries,
            error=EmbedderError,
            what=f"embedder {self.model_id}",
            sleep=self._sleep,
            deadline=self.timeout,  # a server dripping its answer cannot hold a write for longer
        )
        return self._vectors(response, texts)

    async def _abatch(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        response = await apost_with_retry(
            self._async_client(),
            self.url,
            self._payload(texts),
            max_retries=self.max_retries,
            error=EmbedderError,
            what=f"embedder {self.model_id}",
            sleep=self._asleep,
            deadline=self.timeout,
        )
        return self._vectors(response, texts)

    def _async_client(self) -> httpx.AsyncClient:
        """One async client per event loop: its connections belong to the loop that opened them."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async.get(loop)
            if client is None:
                client = self._async[loop] = httpx.AsyncClient(timeout=self.timeout, headers=self._headers)
            return client

    def _vectors(self, response: httpx.Response, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
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
