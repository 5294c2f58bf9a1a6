"""The real embedded models: MiniLM ONNX and Gemma 3 270M through llama.cpp.

Missing weights FAIL with instructions (a silently skipped model test hides a broken setup); set
AMEM_SKIP_LOCAL_MODELS=1 to skip on purpose. Weights are read from AMEM_TEST_MODELS_DIR, default
``<repo>/.amem-test/models``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amem import models
from amem.errors import LLMError, ModelNotAvailable
from amem.llm.base import Message

pytestmark = [
    pytest.mark.local_models,
    pytest.mark.skipif(os.environ.get("AMEM_SKIP_LOCAL_MODELS") == "1", reason="AMEM_SKIP_LOCAL_MODELS=1"),
]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models_dir() -> Path:
    return Path(os.environ.get("AMEM_TEST_MODELS_DIR") or REPO / ".amem-test" / "models")


@pytest.fixture(scope="module")
def embedder() -> Any:
    from amem.embed.local import MiniLMEmbedder

    return MiniLMEmbedder()


@pytest.fixture(scope="module", params=["xllamacpp", "llama-cpp"])
def gemma(models_dir: Path, request: pytest.FixtureRequest) -> Any:
    """Gemma on each runtime installed (both where both are); at least one must be."""
    from amem.errors import LLMUnavailable
    from amem.llm.local import LocalLLM, resolve_runtime

    try:
        resolve_runtime("auto")
    except LLMUnavailable as exc:
        pytest.fail(f"{exc} (or AMEM_SKIP_LOCAL_MODELS=1)")
    try:
        resolve_runtime(request.param)
    except LLMUnavailable as exc:
        pytest.skip(f"this runtime is not installed here: {exc}")
    try:
        return LocalLLM("gemma-3-270m", models_dir, n_ctx=2048, runtime=request.param)
    except ModelNotAvailable as exc:
        pytest.fail(
            f"{exc}\nFetch it with: python -c \"from amem.models import pull; pull('gemma-3-270m', "
            f"'{models_dir}')\" (or set AMEM_SKIP_LOCAL_MODELS=1 to skip these tests)"
        )


# --- MiniLM ------------------------------------------------------------------------------------------------


def test_minilm_shape_normalisation_and_dtype(embedder: Any) -> None:
    out = embedder.embed_documents(["hello world", "", "a much longer sentence about agent memory " * 3])
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_documents([]).shape == (0, 384)
    q = embedder.embed_query("hello world")
    assert q.shape == (384,)
    np.testing.assert_allclose(q, out[0], atol=1e-6)


def test_minilm_paraphrases_are_closer_than_unrelated(embedder: Any) -> None:
    a, b, c = embedder.embed_documents(
        [
            "The user prefers their coffee black, without sugar.",
            "They like to drink coffee with no milk or sugar.",
            "The quarterly tax report is due at the end of March.",
        ]
    )
    assert float(a @ b) > 0.6
    assert float(a @ b) > float(a @ c) + 0.3


def test_minilm_is_deterministic_and_batch_independent(embedder: Any) -> None:
    texts = [f"note {i}: " + "word " * (i % 40) for i in range(70)]
    one = embedder.embed_documents(texts)
    two = embedder.embed_documents(list(reversed(texts)))[::-1]
    np.testing.assert_allclose(one, two, atol=1e-6)
    np.testing.assert_allclose(one[5], embedder.embed_query(texts[5]), atol=1e-6)


def test_minilm_truncates_long_input(embedder: Any) -> None:
    long = "memory " * 5000
    np.testing.assert_allclose(embedder.embed_query(long), embedder.embed_query("memory " * 400), atol=1e-6)


# --- Gemma ------------------------------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "keywords": {
            "type": "array",
            "items": {"type": "string", "maxLength": 24},
            "minItems": 1,
            "maxItems": 4,
        },
        "category": {"type": "string", "enum": ["travel", "food", "work", "other"]},
    },
    "required": ["keywords", "category"],
    "additionalProperties": False,
}


def _check(data: Any) -> None:
    """Just enough JSON-schema validation for SCHEMA (no extra dependency)."""
    assert isinstance(data, dict) and set(data) == {"keywords", "category"}
    assert data["category"] in SCHEMA["properties"]["category"]["enum"]
    kws = data["keywords"]
    assert isinstance(kws, list) and 1 <= len(kws) <= 4
    assert all(isinstance(k, str) and len(k) <= 24 for k in kws)


def test_gemma_schema_output_parses_and_validates(gemma: Any) -> None:
    messages = [
        Message("system", "You label notes. Reply with JSON only."),
        Message("user", "Note: Booked a train from Paris to Rome for the conference next May."),
    ]
    start = time.perf_counter()
    out = gemma.complete(messages, schema=SCHEMA, max_tokens=120)
    elapsed = time.perf_counter() - start
    _check(json.loads(out.text))
    assert out.usage.input_tokens > 10 and out.usage.output_tokens > 0
    assert out.model == "local:gemma-3-270m"
    assert elapsed < 60, f"one short completion took {elapsed:.1f}s"
    again = gemma.complete(messages, schema=SCHEMA, max_tokens=120)
    assert again.text == out.text, "temperature 0 with a fixed seed is deterministic"


def test_gemma_prompt_longer_than_context_is_a_clear_error(gemma: Any) -> None:
    with pytest.raises(LLMError, match=r"prompt too long .* raise n_ctx"):
        gemma.complete([Message("user", "memory " * 3000)], max_tokens=8)
    # and the model still works afterwards
    assert gemma.complete([Message("user", "Say yes.")], max_tokens=4).text is not None


def test_gemma_file_is_verified(models_dir: Path, gemma: Any) -> None:
    assert models.model_path("gemma-3-270m", models_dir) == gemma.path
    assert (models_dir / "gemma-3-270m-q4_k_m.gguf.verified").is_file()


def test_bench_runtime_decodes_the_same_prompts_on_each_setting(gemma: Any) -> None:
    """`amem bench runtime` on the real model: one row per setting, every prompt answered, two slots
    decoding at once included (xllamacpp), schema objects closed to unnamed keys."""
    from amem.bench import runtime
    from amem.llm.local import closed

    if gemma.runtime != "xllamacpp":
        pytest.skip("the parallel setting needs xllamacpp; one runtime is enough here")
    batch = runtime.prompts(REPO / "tests" / "data" / "locomo_tiny.json", None, 2)
    assert len(batch) == 2 and "RELATED NOTES: none" in batch[0].messages[0].content
    assert "N1 [" in batch[1].messages[0].content  # the turn before, as a real write shows it
    settings = [runtime.Setting("xllamacpp", 1, 1), runtime.Setting.parse("xllamacpp:2:1")]
    assert runtime.Setting.parse("llama-cpp+free:1:2") == runtime.Setting(
        "llama-cpp", 1, 2, constrained=False
    )
    rows = [r.row() for r in runtime.run(settings, batch, "gemma-3-270m", gemma.path.parent)]
    assert [r["setting"] for r in rows] == ["xllamacpp x1 (1 threads)", "xllamacpp x2 (1 threads)"]
    assert all(r["calls"] == 2 and r["output_tokens_per_call"] > 0 and r["wall_s"] > 0 for r in rows)
    assert rows[0]["same_as_first"] is None and 0 <= rows[1]["same_as_first"] <= 2
    assert "| xllamacpp x2 (1 threads) | 2 |" in runtime.markdown(rows)
    assert closed({"type": "object", "properties": {"a": {"type": "object", "properties": {}}}}) == {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {}, "additionalProperties": False}},
        "additionalProperties": False,
    }
