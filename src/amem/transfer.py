"""Lossless JSONL export and import of a memory: notes (with vectors), links, versions and LLM calls.

Line 1 is a header; every other line is ``{"type": ..., "data": ...}``. Import is idempotent: ids
already present are skipped, so a partial import can be re-run. An import never reaches outside the
importing memory's scope: every note must belong to it (or be moved into it with ``rescope``), and
every link, version and LLM call must refer to notes of the file or of that scope. Servers name files
only inside a chosen folder (``confine``); the CLI, run with the user's own rights, takes any path.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import BaseModel, ValidationError

from .errors import InvalidInput
from .memory import Memory
from .notes import Link, LLMCall, Note, NoteVersion, check_json_text

#: ids amem makes are 32 hex digits; an imported id may be any such token, never text with spaces,
#: controls or path characters (ids end up in URLs, file names of callers and terminal output)
ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
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


def confine(folder: str | Path, name: str | Path) -> Path:
    """The file ``name`` inside ``folder``; refuses any name that leaves it (``..``, an absolute path
    elsewhere, a symbolic link pointing out), so a remote caller can only touch that folder."""
    text = str(name)
    if not text.strip() or "\x00" in text:
        raise InvalidInput(f"{text!r} is not a file name; give a name like 'backup.jsonl'")
    root = Path(folder).expanduser().resolve()
    full = (root / text).resolve()  # an absolute `text` replaces root; symlinks are followed
    if full == root or root not in full.parents:
        raise InvalidInput(f"{text!r} is outside the transfer folder {root}; give a file name inside it")
    return full


def export_to(memory: Memory, path: str | Path, folder: str | Path | None = None) -> tuple[Path, int]:
    """Write the export to ``path`` (inside ``folder`` when given) through a temporary file, so a crash
    leaves either the old file or the whole new one. Subfolders are made only inside ``folder``; a
    plain path's folder must exist. Returns the path written and its line count."""
    target = confine(folder, path) if folder is not None else Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        if folder is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(tmp, flags, 0o600), "w", encoding="utf-8") as out:
            count = export_file(memory, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise InvalidInput(
            f"cannot write {target}: {exc.strerror}; check the folder exists and is writable"
        ) from None
    return target, count


def import_file(
    memory: Memory, path: str | Path, *, folder: str | Path | None = None, rescope: bool = False
) -> ImportReport:
    """Import ``path`` (inside ``folder`` when given); see ``import_lines``."""
    source = confine(folder, path) if folder is not None else Path(path)
    try:
        text = source.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open {path}: {exc.strerror}") from None
    return import_lines(memory, lines_of(text), str(path), rescope=rescope)


def lines_of(text: str) -> list[str]:
    """JSON lines split at newlines only: ``str.splitlines`` would also cut at U+2028, U+0085, form
    feeds and the like, which JSON written with ``ensure_ascii=False`` may hold inside its strings."""
    return text.replace("\r\n", "\n").split("\n")


def import_lines(memory: Memory, lines: Iterable[str], label: str, *, rescope: bool = False) -> ImportReport:
    """Validate every record first, then write them in one transaction: all or nothing.

    Notes outside the memory's scope are refused, or with ``rescope`` moved into it (the scope's set
    fields replace the note's). Links, versions and LLM calls may only name notes of the file or notes
    already in the scope, and a link never joins two scopes."""
    records = list(_records(lines, label))
    if not records:
        raise InvalidInput(f"{label} is empty; expected an amem export")
    header, body = records[0][2], records[1:]
    store = memory.store
    model, dims = header.get("embedding_model"), header.get("dimensions")
    if model is not None and not isinstance(model, str):
        raise InvalidInput(f"{label}: the header's embedding_model must be a string, not {model!r}")
    if dims is not None and not (isinstance(dims, int | str) and str(dims).isdigit()):
        raise InvalidInput(f"{label}: the header's dimensions must be a whole number, not {dims!r}")
    own = store.get_meta("embedding_model")
    if own is not None and model is not None and own != model:
        raise InvalidInput(
            f"the export was embedded with {model!r} but this memory uses {own!r}; "
            "import into an empty memory"
        )
    own_dims = store.get_meta("dimensions")
    if dims is not None and own_dims is not None and str(dims) != str(own_dims):
        raise InvalidInput(f"the export has {dims}-dimensional vectors but this memory holds {own_dims}")
    plan = _Plan(memory, label, rescope, int(own_dims or dims or 0))
    for number, _kind, obj in body:
        plan.check(number, obj)
    report = ImportReport()
    with store.atomic():
        if own is None and model is not None:
            store.set_meta("embedding_model", str(model))
        for _number, _kind, obj in plan.records:
            _write(memory, obj, report)
    return report


@dataclass
class _Plan:
    """The records checked against the scope; notes already rescoped."""

    memory: Memory
    label: str
    rescope: bool
    dims: int
    records: list[tuple[int, str, Any]] = field(default_factory=list)
    notes: dict[str, Note] = field(default_factory=dict)  # by id: the file's notes, then the store's

    def check(self, number: int, obj: Any) -> None:
        where = f"{self.label}:{number}"
        if isinstance(obj, tuple):
            note, vector = obj
            note = self._own(where, note)
            if self.dims and vector.size != self.dims:
                raise InvalidInput(f"{where}: a {vector.size}-dimensional vector, expected {self.dims}")
            self.dims = self.dims or vector.size
            if not np.all(np.isfinite(vector)):
                raise InvalidInput(f"{where}: the note's vector holds NaN or infinity; nothing was imported")
            self.notes[note.id] = note
            self.records.append((number, "note", (note, vector)))
            for ref in (note.superseded_by, note.merged_into, *(s.get("note_id") for s in note.sources)):
                if isinstance(ref, str):
                    self._known(where, ref)
            return
        if isinstance(obj, Link):
            source, target = self._known(where, obj.source_id), self._known(where, obj.target_id)
            if source.scope != target.scope:
                raise InvalidInput(f"{where}: a link between two scopes; links stay within one scope")
        elif isinstance(obj, NoteVersion):
            owner = self._known(where, obj.note_id)
            for snap in obj.links or []:
                if self._known(where, snap.target_id).scope != owner.scope:
                    raise InvalidInput(f"{where}: a version linking two scopes; links stay within one scope")
        elif isinstance(obj, LLMCall):
            for note_id in obj.note_ids:
                self._known(where, note_id)
        self.records.append((number, type(obj).__name__, obj))

    def _own(self, where: str, note: Note) -> Note:
        if not ID.fullmatch(note.id):
            raise InvalidInput(f"{where}: note id {note.id!r} is not an id (letters, digits, '_.:-'; 1-128)")
        scope = self.memory.scope
        if self.rescope:
            fields = {"user_id": scope.user_id, "agent_id": scope.agent_id, "run_id": scope.run_id}
            note = note.model_copy(update={k: v for k, v in fields.items() if v is not None})
        if not scope.matches(note):
            raise InvalidInput(
                f"{where}: note {note.id} belongs to {_describe(note)}, outside this memory's scope "
                f"({_describe(scope)}); import it in that scope, or move it here with rescope"
            )
        stored = self.memory.store.get_notes([note.id]).get(note.id)
        if stored is not None and stored.scope != note.scope:
            raise InvalidInput(
                f"{where}: note id {note.id} is already taken by another note; nothing was imported"
            )
        return note

    def _known(self, where: str, note_id: str) -> Note:
        """A note the record may refer to: one of the file's (earlier lines) or one already in scope."""
        note = self.notes.get(note_id)
        if note is None:
            stored = self.memory.store.get_notes([note_id]).get(note_id) if "\x00" not in note_id else None
            if stored is None or not self.memory.scope.matches(stored):
                raise InvalidInput(
                    f"{where}: refers to note {note_id!r}, which is neither in the file nor in this scope; "
                    "nothing was imported"
                )
            note = self.notes[note_id] = stored
        return note


def _describe(who: Any) -> str:
    parts = [f"{k} {getattr(who, k + '_id')!r}" for k in ("user", "agent", "run") if getattr(who, k + "_id")]
    return ", ".join(parts) or "no user"


def _write(memory: Memory, obj: Any, report: ImportReport) -> None:
    store = memory.store
    if isinstance(obj, tuple):
        note, vector = obj
        if store.get_note(note.id) is not None:
            report.skipped += 1
            return
        store.insert_note(note, vector)
        report.notes += 1
    elif isinstance(obj, Link):
        present = {(lk.source_id, lk.target_id) for lk in store.links_for([obj.source_id])}
        if (obj.source_id, obj.target_id) in present:
            report.skipped += 1
            return
        store.upsert_links([obj])
        report.links += 1
    elif isinstance(obj, NoteVersion):
        if any(v.version == obj.version for v in store.versions(obj.note_id)):
            report.skipped += 1
            return
        store.add_version(obj)
        report.versions += 1
    elif isinstance(obj, LLMCall):
        known = {c.id for n in obj.note_ids[:1] for c in store.llm_calls(n)}
        if obj.id in known:
            report.skipped += 1
            return
        store.record_llm_call(obj)
        report.llm_calls += 1


def _records(lines: Iterable[str], label: str) -> Iterator[tuple[int, str, Any]]:
    header_seen = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{label}:{number}: not JSON ({exc.msg}); nothing was imported") from None
        except RecursionError:
            raise InvalidInput(f"{label}:{number}: JSON nested too deeply; nothing was imported") from None
        try:
            check_json_text(record, f"{label}:{number}")  # NUL or a lone surrogate: no store keeps it
        except (InvalidInput, RecursionError) as exc:
            raise InvalidInput(f"{exc}; nothing was imported") from None
        if not header_seen:
            header_seen = True
            if not isinstance(record, dict) or record.get("type") != FORMAT:
                raise InvalidInput(f"{label} is not an amem export (first line must be the header)")
            if record.get("version") != FORMAT_VERSION:
                raise InvalidInput(f"{label}: export format {record.get('version')} is not supported")
            yield number, FORMAT, record
            continue
        yield number, *_parse(label, number, record)


def _parse(label: str, number: int, record: Any) -> tuple[str, Any]:
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict):
        raise InvalidInput(
            f"{label}:{number}: expected {{'type': ..., 'data': {{...}}}}; nothing was imported"
        )
    kind, data = record.get("type"), dict(record["data"])
    try:
        if kind == "note":
            raw = base64.b64decode(str(data.pop("embedding", "")), validate=True)
            if len(raw) % 4:
                raise InvalidInput(f"{label}:{number}: the embedding is not float32 values")
            vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
            if vector.size == 0:
                raise InvalidInput(f"{label}:{number}: note without embedding")
            return kind, (Note.model_validate(data), vector)
        if kind == "link":
            return kind, Link.model_validate(data)
        if kind == "version":
            return kind, NoteVersion.model_validate(data)
        if kind == "llm_call":
            return kind, LLMCall.model_validate(data)
    except (ValidationError, ValueError) as exc:
        raise InvalidInput(f"{label}:{number}: invalid {kind}: {exc}; nothing was imported") from exc
    raise InvalidInput(f"{label}:{number}: unknown record type {kind!r}; nothing was imported")
