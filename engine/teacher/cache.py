"""The response cache on the ``teacher_responses`` table.

One row per successful request, keyed by the sha256 of (base_url, model, api, prompt, parameters with the
sample index): a cached success is never sent again, whichever job asks (a resumed job, a re-run with a new
fingerprint, the Batch API import, the judge). Failures are never cached. No key or header is stored.
"""

from __future__ import annotations

from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlmodel import select

from db.models import TeacherResponse, utcnow
from db.session import session_scope
from engine.teacher.client import Endpoint, Reply, TeacherRequest


class ResponseCache:
    def __init__(self, database: Engine):
        self.engine = database

    def get(self, key: str) -> Reply | None:
        with session_scope(self.engine) as s:
            row = s.exec(select(TeacherResponse).where(TeacherResponse.key == key)).first()
            if row is None:
                return None
            return Reply(
                text=row.text,
                finish_reason=row.finish_reason,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                cached=True,
            )

    def put(self, key: str, endpoint: Endpoint, request: TeacherRequest, reply: Reply) -> None:
        stmt = (
            insert(TeacherResponse)
            .values(
                key=key,
                base_url=endpoint.base_url,
                model=endpoint.model,
                prompt=request.prompt,
                params=request.params(endpoint.api),
                text=reply.text,
                finish_reason=reply.finish_reason,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["key"])
        )
        with session_scope(self.engine) as s:
            s.exec(stmt)  # type: ignore[call-overload]
