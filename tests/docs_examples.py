"""The runnable examples of the docs, so a test runs exactly what a reader copies."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: str | Path) -> list[str]:
    """The ```python blocks of a docs page (a path, or a name under docs/), in order."""
    path = page if isinstance(page, Path) else DOCS / page
    return _BLOCK.findall(path.read_text(encoding="utf-8"))
