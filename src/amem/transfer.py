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
import tempfile
import uuid
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
    """Write the export to ``path`` (inside ``folder`` when given) through a new temporary file, so a crash
    leaves either the old file or the whole new one. Subfolders are made only inside ``folder``; a
    plain path's folder must exist. Returns the path written and its line count."""
    target = confine(folder, path) if folder is not None else Path(path)
    tmp: Path | None = None
    try:
        if folder is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
        # a fresh, exclusive file per export: two exports to one name never share a temporary file
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        tmp = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            count = export_file(memory, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink()
        raise InvalidInput(
            f"cannot write {target}: {exc.strerror}; check the folder exists and is writable"
        ) from None
    return target, count


def import_file(
    memory: Memory,
    path: str | Path,
    *,
    folder: str | Path | None = None,
    rescope: bool = False,
    adopt_model: bool = True,
) -> ImportReport:
    """Import ``path`` (inside ``folder`` when given); see ``import_lines``."""
    source = confine(folder, path) if folder is not None else Path(path)
    try:
        text = source.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open {path}: {exc.strerror}") from None
    return import_lines(memory, lines_of(text), str(path), rescope=rescope, adopt_model=adopt_model)


def lines_of(text: str) -> list[str]:
    """JSON lines split at newlines only: ``str.splitlines`` would also cut at U+2028, U+0085, form
    feeds and the like, which JSON written with ``ensure_ascii=False`` may hold inside its strings."""
    return text.replace("\r\n", "\n").split("\n")


def import_lines(
    memory: Memory, lines: Iterable[str], label: str, *, rescope: bool = False, adopt_model: bool = True
) -> ImportReport:
    """Validate every record first, then write them in one transaction: all or nothing.

    Notes outside the memory's scope are refused; with ``rescope`` they are copied into it (the scope's
    set fields replace the note's) under new ids derived from the old id and the scope, so the copy can
    sit beside the original in one store and a rerun skips it. Links, versions and LLM calls may only
    name notes of the file or already in the scope, and a link never joins two scopes. An empty store
    takes the file's embedding model unless ``adopt_model`` is off (servers: a tenant's file must not
    decide the model every tenant embeds with), in which case the file must match the memory's embedder.
    """
    records = list(_records(lines, label))
    if not records:
        raise InvalidInput(f"{label} is empty; expected an amem export")
    header, body = records[0][1], records[1:]
    store = memory.store
    model, dims = header.get("embedding_model"), header.get("dimensions")
    if model is not None and not isinstance(model, str):
        raise InvalidInput(f"{label}: the header's embedding_model must be a string, not {model!r}")
    if dims is not None and not _whole(dims):
        raise InvalidInput(f"{label}: the header's dimensions must be a whole number, not {dims!r}")
    own, own_dims = store.get_meta("embedding_model"), store.get_meta("dimensions")
    if not adopt_model:
        own, own_dims = memory.embedder.model_id, own_dims or str(memory.embedder.dimensions)
        if model != own:
            raise InvalidInput(
                f"the export was embedded with {model!r} but this memory embeds with {own!r}; "
                "import it where that embedder is configured"
            )
    if own is not None and model is not None and own != model:
        raise InvalidInput(
            f"the export was embedded with {model!r} but this memory uses {own!r}; "
            "import into an empty memory"
        )
    if dims is not None and own_dims is not None and int(dims) != int(own_dims):
        raise InvalidInput(f"the export has {dims}-dimensional vectors but this memory holds {own_dims}")
    plan = _Plan(memory, label, rescope, int(own_dims or dims or 0))
    for number, obj in body:
        if isinstance(obj, tuple):
            plan.note(number, *obj)
    plan.pointers()
    plan.fetch_calls([obj.id for _, obj in body if isinstance(obj, LLMCall)])
    for number, obj in body:
        if not isinstance(obj, tuple):
            plan.check(number, obj)
    report = ImportReport()
    with store.atomic():
        if store.get_meta("embedding_model") is None and model is not None:
            store.set_meta("embedding_model", str(model))
        plan.write(report)
    return report


def _whole(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdecimal())


@dataclass
class _Plan:
    """The file's records checked against the scope, notes first (a note may point at a later one)."""

    memory: Memory
    label: str
    rescope: bool
    dims: int
    records: list[Any] = field(default_factory=list)
    notes: dict[str, Note] = field(default_factory=dict)  # by id: the file's notes, then the store's
    renamed: dict[str, str] = field(default_factory=dict)  # note and call ids of copies made by rescope
    lines: dict[str, str] = field(default_factory=dict)  # a file note's id -> where it was read
    stored: dict[str, Note] = field(default_factory=dict)  # the file's notes already in the store
    calls: dict[str, LLMCall] = field(default_factory=dict)  # the file's LLM calls already in the store

    def note(self, number: int, note: Note, vector: np.ndarray[Any, Any]) -> None:
        where = f"{self.label}:{number}"
        if not ID.fullmatch(note.id):
            raise InvalidInput(f"{where}: note id {note.id!r} is not an id (letters, digits, '_.:-'; 1-128)")
        if self.dims and vector.size != self.dims:
            raise InvalidInput(f"{where}: a {vector.size}-dimensional vector, expected {self.dims}")
        self.dims = self.dims or vector.size
        if not np.all(np.isfinite(vector)):
            raise InvalidInput(f"{where}: the note's vector holds NaN or infinity; nothing was imported")
        note = self._own(where, note)
        self.notes[note.id] = note
        self.lines[note.id] = where
        self.records.append((note, vector))

    def check(self, number: int, obj: Any) -> None:
        where = f"{self.label}:{number}"
        if isinstance(obj, Link):
            obj = obj.model_copy(
                update={
                    "source_id": self._id(obj.source_id),
                    "target_id": self._id(obj.target_id),
                    "llm_call_id": self._call_id(obj.llm_call_id),
                }
            )
            source, target = self._known(where, obj.source_id), self._known(where, obj.target_id)
            if source.scope != target.scope:
                raise InvalidInput(f"{where}: a link between two scopes; links stay within one scope")
        elif isinstance(obj, NoteVersion):
            snaps = [
                s.model_copy(
                    update={"target_id": self._id(s.target_id), "llm_call_id": self._call_id(s.llm_call_id)}
                )
                for s in obj.links or []
            ]
            obj = obj.model_copy(
                update={
                    "note_id": self._id(obj.note_id),
                    "llm_call_id": self._call_id(obj.llm_call_id),
                    "links": snaps if obj.links is not None else None,
                    **self._pointers(obj),
                }
            )
            owner = self._known(where, obj.note_id)
            for snap in snaps:
                if self._known(where, snap.target_id).scope != owner.scope:
                    raise InvalidInput(f"{where}: a version linking two scopes; links stay within one scope")
            self._pointers_known(where, obj)
        elif isinstance(obj, LLMCall):
            if not obj.note_ids:
                raise InvalidInput(f"{where}: an LLM call for no note; nothing was imported")
            obj = obj.model_copy(
                update={"id": self._call_id(obj.id), "note_ids": [self._id(i) for i in obj.note_ids]}
            )
            mine = {self._known(where, i).id for i in obj.note_ids}
            taken = self.calls.get(obj.id)
            if taken is not None and not set(taken.note_ids) <= mine | set(self._visible(taken.note_ids)):
                raise InvalidInput(f"{where}: LLM call id {obj.id} is already taken; nothing was imported")
        self.records.append(obj)

    def pointers(self) -> None:
        """Once every note of the file is known (one read for all): ids taken by a note of another
        scope, then the notes' merge, supersede and source pointers."""
        self.stored = self.memory.store.get_notes(list(self.lines))
        for note_id, stored in self.stored.items():
            if stored.scope != self.notes[note_id].scope:
                raise InvalidInput(
                    f"{self.lines[note_id]}: note id {note_id} is already taken by another note; "
                    "nothing was imported"
                )
        for i, (note, vector) in enumerate(self.records):
            moved = note.model_copy(update=self._pointers(note))
            self._pointers_known(f"{self.label}: note {note.id}", moved)
            self.records[i] = (moved, vector)
            self.notes[moved.id] = moved

    def _own(self, where: str, note: Note) -> Note:
        scope = self.memory.scope
        if self.rescope:
            fields = {"user_id": scope.user_id, "agent_id": scope.agent_id, "run_id": scope.run_id}
            moved = note.model_copy(update={k: v for k, v in fields.items() if v is not None})
            if moved.scope != note.scope:
                self.renamed[note.id] = _derived(moved.scope, note.id)
                moved.id = self.renamed[note.id]
            note = moved
        if not scope.matches(note):
            raise InvalidInput(
                f"{where}: note {note.id} belongs to {_describe(note)}, outside this memory's scope "
                f"({_describe(scope)}); import it in that scope, or copy it here with rescope"
            )
        return note

    def fetch_calls(self, ids: list[str]) -> None:
        """The file's LLM calls (by their ids after any rescope) that the store holds already."""
        self.calls = self.memory.store.get_llm_calls([c for i in ids if (c := self._call_id(i))])

    def write(self, report: ImportReport) -> None:
        """The checked records; what is already there is skipped (a rerun of an import changes nothing).
        What the store held was read once beforehand; what this import adds is tracked here."""
        store = self.memory.store
        # the notes the store held before: the file's kept ones and those records name from the scope
        existing = {i for i in self.notes if i not in self.lines or i in self.stored}
        links = {(lk.source_id, lk.target_id) for lk in store.links_for(sorted(existing))}
        versions: dict[str, set[int]] = {}
        calls = set(self.calls)
        inserted: set[str] = set()
        for obj in self.records:
            if isinstance(obj, tuple):
                note, vector = obj
                if note.id in self.stored or note.id in inserted:  # kept, or a repeated line
                    report.skipped += 1
                    continue
                store.insert_note(note, vector)
                inserted.add(note.id)
                report.notes += 1
            elif isinstance(obj, Link):
                if (obj.source_id, obj.target_id) in links:
                    report.skipped += 1
                    continue
                store.upsert_links([obj])
                links.add((obj.source_id, obj.target_id))
                report.links += 1
            elif isinstance(obj, NoteVersion):
                owner = self.stored.get(obj.note_id) or self.notes[obj.note_id]
                if obj.note_id not in versions:
                    versions[obj.note_id] = (
                        {v.version for v in store.versions(obj.note_id)} if obj.note_id in existing else set()
                    )
                # a version beyond the kept note's own (a newer export of a note kept here) is not this
                # note's history: adding it would leave a gap between the note and its versions
                if obj.version > owner.version or obj.version in versions[obj.note_id]:
                    report.skipped += 1
                    continue
                store.add_version(obj)
                versions[obj.note_id].add(obj.version)
                report.versions += 1
            elif isinstance(obj, LLMCall):
                if obj.id in calls:
                    report.skipped += 1
                    continue
                store.record_llm_call(obj)
                calls.add(obj.id)
                report.llm_calls += 1

    def _id(self, note_id: str) -> str:
        return self.renamed.get(note_id, note_id)

    def _call_id(self, call_id: str | None) -> str | None:
        """A copy's LLM calls get derived ids too (the originals may sit in the same store)."""
        if call_id is None or not self.renamed:
            return call_id
        return _derived(self.memory.scope, call_id)

    def _pointers(self, item: Note | NoteVersion) -> dict[str, Any]:
        sources = [
            {**src, "note_id": self._id(src["note_id"])} if isinstance(src.get("note_id"), str) else src
            for src in item.sources
        ]
        return {
            "superseded_by": item.superseded_by and self._id(item.superseded_by),
            "merged_into": item.merged_into and self._id(item.merged_into),
            "sources": sources,
        }

    def _pointers_known(self, where: str, item: Note | NoteVersion) -> None:
        for ref in (item.superseded_by, item.merged_into, *(s.get("note_id") for s in item.sources)):
            if isinstance(ref, str):
                self._known(where, ref)

    def _visible(self, ids: Iterable[str]) -> list[str]:
        found = self.memory.store.get_notes([i for i in ids if "\x00" not in i])
        return [i for i, n in found.items() if self.memory.scope.matches(n)]

    def _known(self, where: str, note_id: str) -> Note:
        """A note the record may refer to: one of the file's or one already in this scope."""
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


def _derived(scope: Any, old_id: str) -> str:
    """The id of a rescoped copy: fixed by the target scope and the old id, so a rerun finds it."""
    key = "\x1f".join(str(getattr(scope, f) or "") for f in ("user_id", "agent_id", "run_id"))
    return uuid.uuid5(uuid.NAMESPACE_OID, f"amem\x1f{key}\x1f{old_id}").hex


def _describe(who: Any) -> str:
    parts = [f"{k} {getattr(who, k + '_id')!r}" for k in ("user", "agent", "run") if getattr(who, k + "_id")]
    return ", ".join(parts) or "no user"


def _records(lines: Iterable[str], label: str) -> Iterator[tuple[int, Any]]:
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
            yield number, record
            continue
        yield number, _parse(label, number, record)


def _parse(label: str, number: int, record: Any) -> Any:
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
            return Note.model_validate(data), vector
        if kind == "link":
            return Link.model_validate(data)
        if kind == "version":
            return NoteVersion.model_validate(data)
        if kind == "llm_call":
            return LLMCall.model_validate(data)
    except (ValidationError, ValueError) as exc:
        raise InvalidInput(f"{label}:{number}: invalid {kind}: {exc}; nothing was imported") from exc
    raise InvalidInput(f"{label}:{number}: unknown record type {kind!r}; nothing was imported")
