# Shared by scripts/demo and scripts/test: make .venv and install amem with the given extras.
# The local LLM runtime (xllamacpp) is a prebuilt wheel: nothing is compiled. CMAKE_ARGS only matters to
# whoever adds the llama-cpp extra (llama-cpp-python, built from source).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv 2>/dev/null || { "$PY" -m pip install -q virtualenv && "$PY" -m virtualenv -q .venv; }
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$1]"
