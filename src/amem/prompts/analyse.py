"""Paper pipeline, call 1 (the reference's "analyze content"): keywords, context and tags of one note."""

from __future__ import annotations

from ..llm.base import Message
from ..llm.runner import Prompt
from ..notes import Note, format_date
from .common import Attributes, clip
from .note import attribute_properties

VERSION = "analyse-v1"
#: What only the example says: a stored field with one of these words, when the input has none, copied
#: the example (``steps/ground.prompt_leaks``).
EXAMPLE_WORDS = "Leo greyhound Pixel rescue adopted"
STEP = "analyse"

INSTRUCTIONS = """Analyse one piece of an agent's memory and answer with one JSON object:
- "keywords": the 3 to 6 most salient nouns, verbs or concepts (no speaker names, no dates), most important first;
- "context": one sentence on the main topic, the key points and the purpose, with relative times \
("yesterday") turned into dates using the given date;
- "tags": 2 to 4 broad lower-case categories for classification.

Example input:
CONTENT [3 June 2021 (Thursday)] Leo: We adopted a rescue greyhound called Pixel last week.
Example answer:
{"keywords": ["rescue greyhound", "adoption", "Pixel"], "context": "Leo says his family adopted a rescue \
greyhound named Pixel in the week before 3 June 2021.", "tags": ["pets", "family"]}

Now the real input."""


class AnalyseOutput(Attributes):
    """keywords, tags and context, validated like the default step's."""


def render(note: Note) -> Prompt[AnalyseOutput]:
    text = f"{INSTRUCTIONS}\nCONTENT [{format_date(note.event_time)}] {clip(note.content, 2000)}\nAnswer:"
    props = attribute_properties()
    schema = {"type": "object", "properties": props, "required": list(props)}
    return Prompt(STEP, VERSION, [Message("user", text)], AnalyseOutput, schema, max_tokens=160)
