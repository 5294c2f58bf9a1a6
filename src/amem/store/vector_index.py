"""Exact cosine search over an in-memory float32 matrix, with scope columns for masking.

Rows are never moved: a delete clears the row's alive bit; the matrix grows by doubling.
At 10^5 notes x 384 dims a query is one ~150 MB matrix-vector product (a few ms).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..embed.base import Vectors
from ..notes import Scope

_NONE = -1


class VectorIndex:
    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._mat = np.zeros((1024, dimensions), dtype=np.float32)
        self._alive = np.zeros(1024, dtype=bool)
        self._active = np.zeros(1024, dtype=bool)  # status 'active': archived and merged notes are not
        self._scope = np.full((1024, 3), _NONE, dtype=np.int32)
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._codes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._row)

    def _code(self, value: str | None, create: bool) -> int:
        if value is None:
            return _NONE
        code = self._codes.get(value)
        if code is None:
            if not create:
                return -2  # a value no note has: matches nothing
            code = len(self._codes)
            self._codes[value] = code
        return code

    def _grow(self, need: int) -> None:
        cap = self._mat.shape[0]
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        mat = np.zeros((new_cap, self.dimensions), dtype=np.float32)
        mat[:cap] = self._mat
        alive = np.zeros(new_cap, dtype=bool)
        alive[:cap] = self._alive
        active = np.zeros(new_cap, dtype=bool)
        active[:cap] = self._active
        self._active = active
        scope = np.full((new_cap, 3), _NONE, dtype=np.int32)
        scope[:cap] = self._scope
        self._mat, self._alive, self._scope = mat, alive, scope

    def upsert(self, note_id: str, vector: Vectors, scope: Scope, active: bool = True) -> None:
        row = self._row.get(note_id)
        if row is None:
            row = len(self._ids)
            self._grow(row + 1)
            self._ids.append(note_id)
            self._row[note_id] = row
        self._mat[row] = vector
        self._alive[row] = True
        self._active[row] = active
        self._scope[row] = (
            self._code(scope.user_id, True),
            self._code(scope.agent_id, True),
            self._code(scope.run_id, True),
        )

    def set_vector(self, note_id: str, vector: Vectors) -> None:
        row = self._row.get(note_id)
        if row is not None:
            self._mat[row] = vector

    def remove(self, note_id: str) -> None:
        row = self._row.pop(note_id, None)
        if row is not None:
            self._alive[row] = False

    def get(self, note_id: str) -> Vectors | None:
        row = self._row.get(note_id)
        return None if row is None else self._mat[row].copy()

    def search(
        self,
        query: Vectors,
        k: int,
        scope: Scope,
        allowed: Iterable[str] | None = None,
        exclude: Sequence[str] = (),
        active_only: bool = False,
    ) -> list[tuple[str, float]]:
        n = len(self._ids)
        if n == 0 or k <= 0:
            return []
        mask = self._alive[:n] & self._active[:n] if active_only else self._alive[:n].copy()
        for col, value in enumerate((scope.user_id, scope.agent_id, scope.run_id)):
            if value is not None or scope.exact:
                mask &= self._scope[:n, col] == self._code(value, False)
        if allowed is not None:
            allow = np.zeros(n, dtype=bool)
            rows = [self._row[i] for i in allowed if i in self._row]
            allow[rows] = True
            mask &= allow
        for note_id in exclude:
            row = self._row.get(note_id)
            if row is not None:
                mask[row] = False
        candidates = np.flatnonzero(mask)
        if candidates.size == 0:
            return []
        # Full scan is one contiguous product; a masked scan gathers only the candidate rows.
        sims_c = self._mat[:n] @ query if candidates.size == n else self._mat[candidates] @ query
        take = min(k, candidates.size)
        top = np.argpartition(-sims_c, take - 1)[:take]
        top = top[np.argsort(-sims_c[top], kind="stable")]
        return [(self._ids[int(candidates[i])], float(sims_c[i])) for i in top]

    def similar_pairs(
        self, scope: Scope, threshold: float, changed: set[str] | None, limit: int
    ) -> list[tuple[str, str, float]]:
        """Pairs of active notes in one exact scope (within ``scope``) with cosine >= threshold, older row
        first, best first. With ``changed``, only pairs where one side is in it. Blocked matrix products:
        at 10^5 notes in one scope that is 10^10 dot products, so runs after the first check only the notes
        changed since."""
        n = len(self._ids)
        if n == 0:
            return []
        mask = self._alive[:n] & self._active[:n]
        for col, value in enumerate((scope.user_id, scope.agent_id, scope.run_id)):
            if value is not None or scope.exact:
                mask &= self._scope[:n, col] == self._code(value, False)
        rows = np.flatnonzero(mask)
        found: dict[tuple[int, int], float] = {}
        keys = self._scope[rows]
        want = None
        if changed is not None:
            want = np.array(sorted(self._row[i] for i in changed if i in self._row), dtype=np.int64)
        for key in np.unique(keys, axis=0):
            group = rows[(keys == key).all(axis=1)]
            if group.size < 2:
                continue
            queries = group if want is None else np.intersect1d(group, want)
            mat = self._mat[group]
            block = max(16, min(2048, 50_000_000 // group.size))  # a block's similarities: <= 200 MB
            for start in range(0, queries.size, block):
                q = queries[start : start + block]
                sims = self._mat[q] @ mat.T
                qi, gi = np.nonzero(sims >= threshold)
                for i, j in zip(qi, gi, strict=True):
                    a, b = int(q[i]), int(group[j])
                    if a != b:
                        found[(min(a, b), max(a, b))] = float(sims[i, j])
        best = sorted(found.items(), key=lambda kv: -kv[1])[:limit]
        return [(self._ids[a], self._ids[b], sim) for (a, b), sim in best]
