"""The checks between an LLM answer and the store: every field grounded in what the LLM was shown for
it, evolution monotone, tags specific. What fails is cut, repaired once, derived without the LLM or
refused, and each of those is recorded on the call (``LLMCall.refused``); nothing here touches notes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..llm.runner import CallFailed, LLMRunner
from ..notes import LLMCall, Note, NoteVersion, Refusal, Scope, format_date
from ..prompts import repair
from ..prompts.common import clean_terms
from ..text import STOPWORDS
from . import ground
from .ground import (
    Sources,
    check_text,
    content_stems,
    is_content,
    is_number,
    own_stems,
    speaker_of,
    stem,
    tokens,
)

#: No tag may be on more than this share of a scope's notes: a tag most notes carry tells nothing.
TAG_SHARE = 0.4
#: ... counted once the scope has a few notes: the first this many may share any tag.
TAG_FREE = 3
#: Tags that describe every note of a conversation and so none of them.
META_TAGS = frozenset(
    """general conversation conversations chat dialogue dialog communication personal other misc
    miscellaneous note notes memory information info statement response reply message messages
    discussion talk update updates""".split()
)
#: Broad topics a tag may name without the note using the word ("health" for a twisted ankle). Any other
#: tag must be the note's own words: a small model tags a note about Lisbon "london".
CATEGORIES = frozenset(
    """achievement activism adoption adventure advice animals anniversary anxiety architecture art arts
    baking beauty birthday body books business camping career celebration charity childhood children
    cinema city climate clothing coding college comedy community commute competition cooking crafts
    creativity culture cycling dance dating death design diet disability divorce driving education
    emotions employment encouragement entertainment environment events exercise faith family fashion
    fear finance fitness food friendship fun future games gaming gardening gifts goals gratitude grief
    growth health hiking history hobbies hobby holiday holidays home housing identity illness injury
    inspiration internet investing job jobs kids language law learning leisure lgbtq lifestyle literature
    love marriage media medical medicine meditation memories mental health mentoring military money
    motivation movies moving music nature news nostalgia nutrition outdoors painting parenting party
    personal growth pets photography planning plans poetry politics pregnancy projects reading recovery
    relationships relaxation religion relocation research retirement romance running safety school
    science self-care shopping sleep social social media spirituality sport sports stress study success
    support swimming teaching teamwork technology therapy training transport transportation travel
    trip vacation volunteering weather wedding wellbeing wellness work workout writing yoga""".split()
)
#: An update may drop at most this share of the words of a note's context that its content states (a
#: detail such as "by the end of the month" when the offer is accepted; never most of them).
MAX_DROPPED = 1 / 3
#: An evolved context must keep at least this share of the neighbour's own content words.
UPDATE_OVERLAP = 0.25

#: What people say to each other rather than about the world ("Wow", "Hey", "great"): two notes that
#: both say it share nothing a link could be about.
CHATTER = frozenset(
    """wow hey hi hello hiya yo yay thanks thx awesome great cool nice amazing wonderful fantastic
    incredible congrats congratulations yeah yep yes okay oh ah aw lol haha hahaha let's lets totally
    definitely absolutely super sweet means mean meant gonna wanna gotta""".split()
)
CHATTER_STEMS = frozenset(stem(w) for w in CHATTER)

History = Callable[[str], Sequence[NoteVersion]]


class TagStats:
    """How often each tag is used in a scope: read from the store every ``refresh`` writes and kept
    current in between by this process's own writes (an estimate is enough for a specificity rule).
    It also keeps, per scope, the speakers and link reasons this process has met: a speaker is nobody's
    topic even in a note someone else says, and a reason given to another link says nothing of this one."""

    def __init__(self, load: Callable[[Scope], tuple[int, dict[str, int]]], refresh: int = 64) -> None:
        self._load = load
        self._refresh = refresh
        self._lock = threading.Lock()
        self._cache: dict[tuple[str | None, ...], tuple[int, dict[str, int], int]] = {}
        self._people: dict[tuple[str | None, ...], set[str]] = {}
        self._reasons: dict[tuple[str | None, ...], set[str]] = {}

    def people(self, scope: Scope, names: Iterable[str]) -> list[str]:
        """``names`` added to the scope's speakers; all of them."""
        with self._lock:
            known = self._people.setdefault(self._key(scope), set())
            known.update(names)
            return sorted(known)

    def reason_used(self, scope: Scope, reason: str) -> bool:
        with self._lock:
            return reason.casefold() in self._reasons.get(self._key(scope), set())

    def use_reason(self, scope: Scope, reason: str) -> None:
        with self._lock:
            self._reasons.setdefault(self._key(scope), set()).add(reason.casefold())

    @staticmethod
    def _key(scope: Scope) -> tuple[str | None, ...]:
        return (scope.user_id, scope.agent_id, scope.run_id)

    def counts(self, scope: Scope) -> tuple[int, dict[str, int]]:
        key = self._key(scope)
        with self._lock:
            held = self._cache.get(key)
        if held is None or held[2] >= self._refresh:
            total, per_tag = self._load(scope)
            with self._lock:
                self._cache[key] = held = (total, dict(per_tag), 0)
        return held[0], held[1]

    def added(self, scope: Scope, tags: Iterable[str]) -> None:
        key = self._key(scope)
        with self._lock:
            held = self._cache.get(key)
            if held is None:
                return
            total, per_tag, writes = held
            for tag in tags:
                per_tag[tag] = per_tag.get(tag, 0) + 1
            self._cache[key] = (total + 1, per_tag, writes + 1)


def tag_limit(total: int) -> int:
    """The most notes of a scope of ``total`` notes that one more note's tag may be on, counting it."""
    return max(TAG_FREE, math.floor(TAG_SHARE * (total + 1)))


@dataclass
class Update:
    note_id: str
    context: str
    tags: list[str]


class Checker:
    """Checks the fields of one LLM answer (``call``) and records what it refused on that call."""

    def __init__(
        self,
        runner: LLMRunner | None,
        call: LLMCall,
        shown: Sequence[Note],
        tags: TagStats | None = None,
        history: History | None = None,
    ) -> None:
        self.runner, self.call, self.tag_stats, self.history = runner, call, tags, history
        self.names = sorted({s for n in shown if (s := speaker_of(n))})
        # everyone who speaks in the scope: never a link's topic, a keyword or a tag ("both mention Jon"
        # for two of Gina's notes that greet him)
        self.people = tags.people(shown[0].scope, self.names) if tags and shown else self.names
        self.shown = Sources.of_notes(shown, self.names).stems
        self.leaks = ground.prompt_leaks()
        self._recorded = len(call.refused)

    def refuse(self, field: str, note: Note | None, text: str, reason: str, action: str) -> None:
        self.call.refused.append(
            Refusal(field=field, note_id=note.id if note else None, text=text, reason=reason, action=action)
        )

    def done(self) -> None:
        """Record the call again when this check refused something from it."""
        if self.runner is not None and len(self.call.refused) > self._recorded:
            self.runner.record(self.call)
            self._recorded = len(self.call.refused)

    def _sources(self, notes: Sequence[Note]) -> Sources:
        return Sources.of_notes(notes, self.names)

    def _check(self, text: str, src: Sources, about: Note, shown: set[str] | None = None) -> ground.Verdict:
        """A context of ``about``: grounded in ``src``, and saying nobody else said its turn."""
        verdict = check_text(text, src, self.leaks, self.shown if shown is None else shown)
        return ground.attributed(verdict, speaker_of(about), self.people)

    # -- a note's own fields ---------------------------------------------------------------------
    def keywords(self, note: Note, keywords: list[str]) -> list[str]:
        """Keywords in the note's own words (every content word supported: no paraphrase, no name or
        number it lacks), no speaker, nothing of the examples; derived from the note when none is left."""
        src = self._sources([note])
        speaker = (speaker_of(note) or "").casefold()
        kept: list[str] = []
        for kw in keywords:
            words = [w for w in tokens(kw) if w.lower() not in STOPWORDS and (len(w) >= 3 or is_number(w))]
            problem = None
            if kw.casefold() == speaker or kw.casefold() in {n.casefold() for n in self.people}:
                problem = "a speaker's name"
            elif not words:
                problem = "no content word"
            else:
                verdict = check_text(kw, src, self.leaks, self.shown)
                missing = [w for w in words if not src.supports(w)]
                if not verdict.text or verdict.problems:
                    problem = "; ".join(verdict.problems) or "not in the note"
                elif missing:  # a keyword is the note's own word: no paraphrase ("london" for Lisbon)
                    problem = "not in the note: " + ", ".join(missing)
            if problem:
                self.refuse("keywords", note, kw, problem, "dropped")
            else:
                kept.append(kw)
        if kept:
            return kept
        derived = derived_keywords(note)
        self.refuse("keywords", note, ", ".join(keywords), "no keyword was grounded in the note", "derived")
        return derived

    def context(self, note: Note, text: str, keywords: list[str]) -> str:
        """The grounded sentences of ``text``; nothing left: one repair call, then a derived context."""
        src = self._sources([note])
        verdict = self._check(text, src, note)
        problems = "; ".join(verdict.problems)
        if verdict.text:
            if verdict.changed:
                self.refuse("context", note, text, problems, "cut")
            return verdict.text
        if self.runner is not None:
            self.refuse("context", note, text, problems, "repaired")
            fixed = self._repair(note, verdict.words, src)
            if fixed:
                return fixed
        else:
            self.refuse("context", note, text, problems, "derived")
        return derived_context(note, keywords)

    def _repair(self, note: Note, avoid: list[str], src: Sources) -> str | None:
        assert self.runner is not None
        try:
            out, call = self.runner.run(repair.render(note, avoid), [note.id])
        except CallFailed:
            return None
        verdict = self._check(out.context, src, note, self.shown | Sources.of(avoid).stems)
        if verdict.text and not verdict.changed:
            return verdict.text
        call.refused.append(
            Refusal(
                field="context",
                note_id=note.id,
                text=out.context,
                reason="; ".join(verdict.problems),
                action="cut" if verdict.text else "derived",
            )
        )
        self.runner.record(call)
        return verdict.text or None

    def tags(self, note: Note, tags: list[str], keywords: list[str], keep: Sequence[str] = ()) -> list[str]:
        """Tags that tell notes apart: no meta tag, nothing of the examples, none already on too many of
        the scope's notes (``keep``: tags the note has already, never counted against it)."""
        total, per_tag = self.tag_stats.counts(note.scope) if self.tag_stats else (0, {})
        limit = tag_limit(total)
        src = self._sources([note])
        kept: list[str] = []
        for tag in tags:
            problem = None
            if tag in keep:
                kept.append(tag)
                continue
            own = [w for w in tokens(tag) if w.lower() not in STOPWORDS]
            if tag in META_TAGS:
                problem = "says nothing about the note"
            elif tag in {n.casefold() for n in self.people}:
                problem = "a speaker's name"
            elif ground.leaked_words(tag, self.leaks, self.shown):
                problem = "a word of the prompt's example"
            elif tag not in CATEGORIES and not all(src.supports(w) for w in own):
                problem = "neither the note's words nor a broad topic"
            elif per_tag.get(tag, 0) + 1 > limit:
                problem = f"already on {per_tag.get(tag, 0)} of {total} notes"
            if problem:
                self.refuse("tags", note, tag, problem, "dropped")
            else:
                kept.append(tag)
        if kept:
            return kept
        for kw in keywords:
            tag = kw.lower()
            if len(tag) <= 30 and per_tag.get(tag, 0) + 1 <= limit and tag not in META_TAGS:
                self.refuse("tags", note, ", ".join(tags), "no specific tag left", "derived")
                return [tag]
        return [keywords[0].lower()[:30]] if keywords else list(tags[:1])

    # -- links ----------------------------------------------------------------------------------
    def reason(self, new: Note, other: Note, why: str) -> str:
        """A link's reason must name something the two notes share other than the people talking and
        their chatter ("same Audrey and dogs" names the dogs), and be this link's own: a reason already
        given to another link of the scope is derived from the two notes instead."""
        verdict = check_text(why, self._sources([new, other]), self.leaks, self.shown, max_sentences=1)
        shared = shared_stems(new, other, self.people)
        text = verdict.text.rstrip(".")
        if text and content_stems(text) & shared:
            if not self._used(new, text):
                if verdict.changed:
                    self.refuse("link", new, why, "; ".join(verdict.problems), "cut")
                return self._use(new, text)
            problem = "already the reason of another link"
        else:
            problem = "; ".join(verdict.problems) or "names nothing the two notes share"
        self.refuse("link", new, why, problem, "derived")
        return self.derived_reason(new, other)

    def derived_reason(self, new: Note, other: Note) -> str:
        """The first of :func:`reason_candidates` no other link of the scope has."""
        options = reason_candidates(new, other, self.people)
        return self._use(new, next((r for r in options if not self._used(new, r)), options[-1]))

    def _used(self, note: Note, reason: str) -> bool:
        return self.tag_stats is not None and self.tag_stats.reason_used(note.scope, reason)

    def _use(self, note: Note, reason: str) -> str:
        if self.tag_stats is not None:
            self.tag_stats.use_reason(note.scope, reason)
        return reason

    # -- evolution ------------------------------------------------------------------------------
    def update(self, neighbour: Note, new: Note, context: str, tags: list[str]) -> Update | None:
        """A neighbour's evolved context and tags, or None when the update would not make it better."""
        verdict = self._check(context, self._sources([neighbour, new]), neighbour)
        if not verdict.text:
            self.refuse("update", neighbour, context, "; ".join(verdict.problems), "refused")
            return None
        problem = monotone(neighbour, new, verdict.text, self.history(neighbour.id) if self.history else [])
        if problem:
            self.refuse("update", neighbour, context, problem, "refused")
            return None
        if verdict.changed:
            self.refuse("update", neighbour, context, "; ".join(verdict.problems), "cut")
        extra = [t for t in self.tags(neighbour, tags, [], keep=neighbour.tags) if t not in neighbour.tags]
        return Update(neighbour.id, verdict.text, clean_terms([*neighbour.tags, *extra], 6, 30, lower=True))

    def merge_reason(self, older: Note, newer: Note, why: str) -> str:
        verdict = check_text(why, self._sources([older, newer]), self.leaks, self.shown, max_sentences=1)
        if verdict.text and not verdict.changed:
            return verdict.text
        if why:
            self.refuse("merge", newer, why, "; ".join(verdict.problems), "derived")
        return derived_reason(newer, older, self.people)


def plausible_update(context: str, neighbour: Note) -> bool:
    """An evolved context must still describe the neighbour: it keeps a quarter (and at least two) of
    the stems of the neighbour's own content, its speaker aside."""
    own = own_stems(neighbour)
    shared = content_stems(context) & own
    return bool(own) and len(shared) >= min(2, len(own)) and len(shared) / len(own) >= UPDATE_OVERLAP


def monotone(neighbour: Note, new: Note, context: str, versions: Sequence[NoteVersion]) -> str | None:
    """Why an update of ``neighbour`` to ``context`` would make it worse, or None. It must describe the
    neighbour (a quarter of its content words), keep all but a third of the words of its current context
    that its content states, keep every word earlier evolution added (or it reverts to an older state),
    and add something of the new note."""
    if not plausible_update(context, neighbour):
        return "describes another note, not this one"
    after, current = _terms(context), _terms(neighbour.context)
    facts = current & (own_stems(neighbour) | _terms(neighbour.content))
    dropped = facts - after
    if len(dropped) > MAX_DROPPED * len(facts):
        return "drops what the note's own content states: " + ", ".join(sorted(dropped))
    first = next((v for v in sorted(versions, key=lambda v: v.version) if v.context), None)
    if first is not None and first.version < neighbour.version:
        evolved = current - _terms(first.context)
        if evolved - after:
            return f"reverts what later versions added to version {first.version}: " + ", ".join(
                sorted(evolved - after)
            )
    if not (after - current) & (own_stems(new) | _terms(new.content)):
        return "adds nothing of the new note"
    return None


def _terms(text: str) -> set[str]:
    """Content stems and numbers: what a context states (a number is a fact too: "starts on 2 May")."""
    return content_stems(text) | {w.lstrip("0") or "0" for w in tokens(text) if is_number(w)}


# -- fields derived without the LLM ------------------------------------------------------------------
def derived_keywords(note: Note, limit: int = 5) -> list[str]:
    """The note's first distinct content words (its speaker aside)."""
    speaker = {stem(w) for w in tokens(speaker_of(note) or "")}
    out: dict[str, str] = {}
    for w in tokens(note.content):
        if is_content(w) and w.isalpha() and len(w) >= 4 and stem(w) not in speaker | CHATTER_STEMS:
            out.setdefault(stem(w), w.lower())
        if len(out) >= limit:
            break
    return list(out.values()) or [note.content.split()[0][:40]]


def derived_context(note: Note, keywords: list[str]) -> str:
    """Who and when, and what about: nothing the note does not say."""
    who = speaker_of(note)
    about = [k for k in keywords if k][:3]
    head = f"{who} on {format_date(note.event_time)}" if who else f"Said on {format_date(note.event_time)}"
    if not about:
        return head + "."
    words = about[0] if len(about) == 1 else ", ".join(about[:-1]) + " and " + about[-1]
    return f"{head}, about {words}."


def shared_stems(a: Note, b: Note, names: Iterable[str] = ()) -> set[str]:
    """Content stems both notes hold, the people talking and their chatter aside (every speaker of the
    scope, not only theirs)."""
    people = {stem(w) for name in names for w in tokens(name)}
    return (own_stems(a) & own_stems(b)) - people - CHATTER_STEMS


def derived_reason(new: Note, other: Note, names: Iterable[str] = ()) -> str:
    """What the two notes share, in the new note's words; when they share no word (a reply, a thanks),
    what each is about and when, so that every such link still says something of its own."""
    return reason_candidates(new, other, names)[0]


def reason_candidates(new: Note, other: Note, names: Iterable[str] = ()) -> list[str]:
    """Reasons derived from the two notes, each more specific than the one before: what they share,
    then what each is about besides, then when (a link takes the first no other link has)."""
    names = list(names)
    theirs = shared_stems(new, other, names)
    shared: dict[str, str] = {}
    for w in tokens(new.content):
        if is_content(w) and not is_number(w) and stem(w) in theirs and stem(w) not in shared:
            shared[stem(w)] = w
        if len(shared) >= 3:
            break
    skip = {stem(w) for name in names for w in tokens(name)} | CHATTER_STEMS | set(shared)

    def topic(note: Note) -> list[str]:  # the longest of its first words: a cheap guess at the most specific
        words = [k for k in derived_keywords(note, 8) if stem(k) not in skip][:4]
        return [max(words, key=len)] if words else []

    about = " and ".join(dict.fromkeys(topic(new) + topic(other)))
    when = format_date(other.event_time).split(" (")[0]
    if shared:
        base = "both mention " + ", ".join(shared.values())
        topics = f"{base}: {about}" if about else base
        return [base, topics, f"{topics} ({when})"]
    if new.event_time.date() == other.event_time.date():
        head = f"same conversation ({when})"
    else:
        head = f"follows up on {when}"
    return [f"{head}: {about}" if about else head]
