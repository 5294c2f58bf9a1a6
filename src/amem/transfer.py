"""Lossless JSONL export and import of a memory: notes (with vectors), links, versions and LLM calls.

Line 1 is a header; every other line is ``{"type": ..., "data": ...}``. Import is idempotent: ids
already present are skipped, so a partial import can be re-run.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import BaseModel, ValidationError

from .errors import InvalidInput
from .memory import Memory
from .notes import Link, LLMCall, Note, NoteVersion

FORMAT = "amem-export"
FORMAT_VERSION = 1


class ImportReport(BaseModel):
    notes: int = 0
    links: int = 0
    versions: int = 0
    llm_calls: int = 0
    skipped: int = 0


def export_lines(memory: Memory) -> Iterator[str]:
    store = memory.store
    yield json.dumps(
        {
            "type": FORMAT,
            "version": FORMAT_VERSION,
            "embedding_model": store.get_meta("embedding_model"),
            "dimensions": store.get_meta("dimensions"),
        }
    )
    ids: list[str] = []
    for note in store.iter_notes(memory.scope):
        ids.append(note.id)
        vec = store.get_vectors([note.id])[note.id]
        data = note.model_dump(mode="json")
        data["embedding"] = base64.b64encode(vec.astype("<f4").tobytes()).decode()
        yield json.dumps({"type": "note", "data": data})
    id_set = set(ids)
    seen_calls: set[str] = set()
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        owned = set(chunk)
        for link in store.links_for(chunk):
            # each link once: with the chunk holding its source, and only inside the exported scope
            if link.source_id in owned and link.target_id in id_set:
                yield json.dumps({"type": "link", "data": link.model_dump(mode="json")})
        for note_id in chunk:
            for version in store.versions(note_id):
                yield json.dumps({"type": "version", "data": version.model_dump(mode="json")})
            for call in store.llm_calls(note_id):
                if call.id not in seen_calls:
                    seen_calls.add(call.id)
                    yield json.dumps({"type": "llm_call", "data": call.model_dump(mode="json")})


def export_file(memory: Memory, out: IO[str]) -> int:
    count = 0
    for line in export_lines(memory):
        out.write(line + "\n")
        count += 1
    return count


def import_file(memory: Memory, path: str | Path) -> ImportReport:
    """Validate the whole file first, then write it in one transaction: all or nothing."""
    records = list(_read(Path(path)))
    if not records:
        raise InvalidInput(f"{path} is empty; expected an amem export")
    header, body = records[0], records[1:]
    store = memory.store
    model = header.get("embedding_model")
    own = store.get_meta("embedding_model")
    if own is not None and model is not None and own != model:
        raise InvalidInput(
            f"the export was embedded with {model!r} but this memory uses {own!r}; "
            "import into an empty memory"
        )
    dims, own_dims = header.get("dimensions"), store.get_meta("dimensions")
    if dims is not None and own_dims is not None and str(dims) != str(own_dims):
        raise InvalidInput(f"the export has {dims}-dimensional vectors but this memory holds {own_dims}")
    report = ImportReport()
    with store.atomic():
        if own is None and model is not None:
            store.set_meta("embedding_model", str(model))
        for _kind, obj in body:
            if isinstance(obj, tuple):
                note, vector = obj
                if store.get_note(note.id) is not None:
                    report.skipped += 1
                    continue
                store.insert_note(note, vector)
                report.notes += 1
            elif isinstance(obj, Link):
                present = {(lk.source_id, lk.target_id) for lk in store.links_for([obj.source_id])}
                if (obj.source_id, obj.target_id) in present:
                    report.skipped += 1
                    continue
                store.upsert_links([obj])
                report.links += 1
            elif isinstance(obj, NoteVersion):
                if any(v.version == obj.version for v in store.versions(obj.note_id)):
                    report.skipped += 1
                    continue
                store.add_version(obj)
                report.versions += 1
            elif isinstance(obj, LLMCall):
                known = {c.id for n in obj.note_ids[:1] for c in store.llm_calls(n)}
                if obj.id in known:
                    report.skipped += 1
                    continue
                store.record_llm_call(obj)
                report.llm_calls += 1
    return report


def _read(path: Path) -> Iterator[Any]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open {path}: {exc.strerror}") from None
    header_seen = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{number}: not JSON ({exc.msg}); nothing was imported") from None
        if not header_seen:
            header_seen = True
            if not isinstance(record, dict) or record.get("type") != FORMAT:
                raise InvalidInput(f"{path} is not an amem export (first line must be the header)")
            if record.get("version") != FORMAT_VERSION:
                raise InvalidInput(f"{path}: export format {record.get('version')} is not supported")
            yield record
            continue
        yield _parse(path, number, record)


def _parse(path: Path, number: int, record: Any) -> tuple[str, Any]:
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict):
        raise InvalidInput(
            f"{path}:{number}: expected {{'type': ..., 'data': {{...}}}}; nothing was imported"
        )
    kind, data = record.get("type"), dict(record["data"])
    try:
        if kind == "note":
            raw = base64.b64decode(str(data.pop("embedding", "")), validate=True)
            vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            if vector.size == 0:
                raise InvalidInput(f"{path}:{number}: note without embedding")
            return kind, (Note.model_validate(data), vector)
        if kind == "link":
            return kind, Link.model_validate(data)
        if kind == "version":
            return kind, NoteVersion.model_validate(data)
        if kind == "llm_call":
            return kind, LLMCall.model_validate(data)
    except (ValidationError, ValueError) as exc:
        raise InvalidInput(f"{path}:{number}: invalid {kind}: {exc}; nothing was imported") from exc
    raise InvalidInput(f"{path}:{number}: unknown record type {kind!r}; nothing was imported")
