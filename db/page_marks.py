"""The per-question marks of a page of paths (duplicates, answer agreement), kept while a question stays the same.

Both marks of a path depend on every path of its question: its duplicate mark on the earlier paths' texts, its
agreement on the others' parsed answers. A page of 100 paths that spans many questions (a job whose questions were
sampled in turns, or a filter that picks paths across the job) therefore reads every path of those questions, texts
included: 40,000 rows for a page of a job of 52 questions. The marks are kept per question here, stamped with its
number of paths and largest id (one grouped read over the (job_id, question_id, id) index, no text) and with a
``generation`` the caller names (the paths screen: the filter job whose parsed answers the paths carry), and read
again only for a question whose stamp changed.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from db import duplicates
from db.models import Path

#: question id -> (stamp, {path id: original id}, {(source, answer): paths})
_Entry = tuple[tuple[Any, ...], dict[int, int], dict[tuple[str, str], int]]


class QuestionMarks:
    """Duplicate marks and answer counts per question of one job, reused while the question's stamp holds."""

    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self.generation: Any = None
        self._job: int | None = None
        self._by_question: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self.reads = 0  # questions read (tests)

    def get(
        self, conn: Connection, job_id: int, question_ids: set[int]
    ) -> tuple[dict[int, int], dict[tuple[int, str, str], int]]:
        """``(duplicate marks, answer counts)`` of the paths of ``question_ids``, in the shapes of
        :func:`db.duplicates.find` ``.of`` and :func:`db.app_queries.answer_agreement`."""
        ids = sorted(question_ids)
        stamps: dict[int, tuple[Any, ...]] = {}
        step = duplicates.CHUNK
        for i in range(0, len(ids), step):
            for qid, n, top in conn.execute(
                select(Path.question_id, func.count(), func.max(Path.id))
                .where(Path.job_id == job_id, Path.question_id.in_(ids[i : i + step]))  # type: ignore[attr-defined]
                .group_by(Path.question_id)
            ):
                stamps[qid] = (int(n), int(top), self.generation)
        with self._lock:
            if self._job != job_id:
                self._job, self._by_question = job_id, {}
            known = {qid: self._by_question.get(qid) for qid in ids}
        stale = [qid for qid in ids if known[qid] is None or known[qid][0] != stamps.get(qid)]  # type: ignore[index]
        if stale:
            from db.app_queries import answer_agreement  # app_queries imports this module

            rows: dict[int, list[duplicates.Row]] = {qid: [] for qid in stale}
            for start in range(0, len(stale), step):
                chunk = stale[start : start + step]
                query = duplicates._select(job_id).where(Path.question_id.in_(chunk))  # type: ignore[attr-defined]
                for r in conn.execute(query):
                    rows[r[1]].append(tuple(r))  # type: ignore[arg-type]
            answers = answer_agreement(conn, job_id, set(stale))
            fresh: dict[int, _Entry] = {qid: (stamps.get(qid, ()), duplicates.mark(rows[qid]).of, {}) for qid in stale}
            for (qid, source, answer), n in answers.items():
                fresh[qid][2][(source, answer)] = n
            self.reads += len(stale)
            with self._lock:
                if self._job == job_id:
                    if len(self._by_question) + len(fresh) > self.limit:
                        self._by_question.clear()
                    self._by_question.update(fresh)
            known.update(fresh)
        dup: dict[int, int] = {}
        counts: dict[tuple[int, str, str], int] = {}
        for qid in ids:
            entry = known[qid]
            if entry is None:
                continue
            dup.update(entry[1])
            for (source, answer), n in entry[2].items():
                counts[(qid, source, answer)] = n
        return dup, counts
