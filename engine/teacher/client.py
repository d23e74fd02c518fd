"""The async OpenAI-compatible client of the teacher (and the judge), with its own retry loop.

The official ``openai`` client does the HTTP; its built-in retries are off (``max_retries=0``) so that this
module decides, counts and reports every attempt:

- 429, 408, 409 and 5xx: retried with exponential back-off and full jitter, waiting at least what
  ``Retry-After`` / ``retry-after-ms`` asks for;
- time-outs and dropped connections: retried the same way;
- 401/403 (credentials) and 404 (wrong base URL, endpoint or model): :class:`UserError` at once;
- connection refused (or an unknown host) before the server ever answered: :class:`UserError` at once;
- other 4xx, or a request still failing after ``max_attempts``: :class:`RequestFailed` with the reason,
  which the stage records against the question before it goes on with the others.

The API key is read from the environment when the client is opened and lives only inside the ``openai``
client object: it is never stored, logged or put into a message. A server on this machine (loopback
address) may run without a key; then the placeholder ``sk-no-key`` is sent.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import ipaddress
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlparse

from db.errors import UserError

if TYPE_CHECKING:
    from openai import AsyncOpenAI

NO_KEY_PLACEHOLDER = "sk-no-key"
RETRY_STATUSES = frozenset({408, 409, 429})
MAX_RETRY_AFTER_S = 300.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how requests go; built from the ``[teacher]`` or ``[judge]`` config section."""

    base_url: str
    model: str
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 60.0
    max_attempts: int = 5
    retry_base_delay: float = 1.0
    retry_max_delay: float = 30.0
    section: str = "teacher"  # config section named in error messages

    @classmethod
    def from_config(cls, cfg: Any, section: str = "teacher") -> Endpoint:
        return cls(
            base_url=normalize_base_url(cfg.base_url),
            model=cfg.model,
            api=cfg.api,
            api_key_env=cfg.api_key_env,
            concurrency=cfg.concurrency,
            timeout=cfg.timeout,
            max_attempts=cfg.max_attempts,
            retry_base_delay=cfg.retry_base_delay,
            retry_max_delay=cfg.retry_max_delay,
            section=section,
        )

    @property
    def path(self) -> str:
        """The endpoint path, as the Batch API names it."""
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"


@dataclass(frozen=True)
class TeacherRequest:
    """One completion request: the prompt and the parameters that define its answer."""

    prompt: str
    temperature: float
    max_tokens: int
    sample: int = 0  # sample index: part of the cache key, so that samples of one prompt stay apart

    def params(self, api: str) -> dict[str, Any]:
        return {"api": api, "temperature": self.temperature, "max_tokens": self.max_tokens, "sample": self.sample}

    def body(self, model: str, api: str) -> dict[str, Any]:
        """The JSON body sent to the endpoint (also a Batch API line's ``body``)."""
        body: dict[str, Any] = {"model": model, "temperature": self.temperature, "max_tokens": self.max_tokens}
        if api == "chat":
            body["messages"] = [{"role": "user", "content": self.prompt}]
        else:
            body["prompt"] = self.prompt
        return body

    def cache_key(self, endpoint: Endpoint) -> str:
        return cache_key(endpoint.base_url, endpoint.model, endpoint.api, self.prompt, self.params(endpoint.api))


@dataclass
class Reply:
    text: str
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int = 0


class RequestFailed(Exception):
    """A request that will not succeed (bounded attempts used up, or refused by the server); the reason is
    safe to store and show."""

    def __init__(self, reason: str, attempts: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


class ReplyCache(Protocol):
    def get(self, key: str) -> Reply | None: ...

    def put(self, key: str, endpoint: Endpoint, request: TeacherRequest, reply: Reply) -> None: ...


@dataclass
class Stats:
    """Counters of one client session: what the progress line and the job summary show."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    succeeded: int = 0
    cache_hits: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    def rate(self) -> float:
        return self.requests / max(time.monotonic() - self.started, 1e-9)


# -- helpers ------------------------------------------------------------------------------------------------
def normalize_base_url(url: str) -> str:
    return url.strip().rstrip("/")


def cache_key(base_url: str, model: str, api: str, prompt: str, params: dict[str, Any]) -> str:
    blob = json.dumps(
        {"base_url": normalize_base_url(base_url), "model": model, "api": api, "prompt": prompt, "params": params},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def is_loopback(base_url: str) -> bool:
    host = (urlparse(base_url).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(endpoint: Endpoint) -> str:
    """The key from ``os.environ[api_key_env]``; a placeholder for a loopback server; else a clear error."""
    key = os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
    if key:
        return key
    if is_loopback(endpoint.base_url):
        return NO_KEY_PLACEHOLDER
    raise UserError(
        f"{endpoint.section}: the environment variable {endpoint.api_key_env or '(none)'} "
        f"({endpoint.section}.api_key_env) is not set; export the API key for {endpoint.base_url} in it"
    )


def check_key_available(endpoint: Endpoint) -> None:
    """Fail early (before a job is created) when no key can be found."""
    resolve_api_key(endpoint)


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds a response asks the client to wait (``retry-after-ms``, ``retry-after`` seconds or HTTP date)."""
    if headers is None:
        return None
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            return max(float(value) / 1000.0, 0.0)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def backoff_delay(
    attempt: int, base: float, cap: float, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): full-jitter exponential back-off
    (uniform in [0, min(cap, base * 2**(attempt-1))]), never less than ``Retry-After``."""
    rng = rng or random
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    delay = rng.uniform(0, ceiling) if ceiling > 0 else 0.0
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S) + rng.uniform(0, 0.1))
    return delay


def redact(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_connect_error(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    return cause is not None and any(c.__name__ == "ConnectError" for c in type(cause).__mro__)


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if value:
                return str(value)
    return ""


def reply_from_body(body: dict[str, Any], api: str) -> Reply:
    """A :class:`Reply` from a chat-completion or completion JSON object (online or Batch API output)."""
    choices = body.get("choices") or []
    if not choices:
        raise RequestFailed("the response has no choices")
    choice = choices[0] or {}
    if api == "chat" or "message" in choice:
        message = choice.get("message") or {}
        text = message.get("content") or ""
    else:
        text = choice.get("text") or ""
    usage = body.get("usage") or {}
    return Reply(
        text=text,
        finish_reason=str(choice.get("finish_reason") or ""),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception to re-raise from a task group: a user error or a cancellation before anything else."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        else:
            flat.append(exc)

    walk(group)
    from engine.jobs import JobCancelled

    for kind in (UserError, JobCancelled, KeyboardInterrupt):
        for exc in flat:
            if isinstance(exc, kind):
                return exc
    return flat[0]


# -- the client --------------------------------------------------------------------------------------------
class TeacherClient:
    """``async with TeacherClient(endpoint, cache) as client: reply = await client.complete(request)``."""

    def __init__(
        self,
        endpoint: Endpoint,
        cache: ReplyCache | None = None,
        *,
        log: Any = None,
        rng: random.Random | None = None,
    ):
        self.endpoint = endpoint
        self.cache = cache
        self.stats = Stats()
        self._log = log or (lambda _msg: None)
        self._rng = rng or random.Random()
        self._client: AsyncOpenAI | None = None
        self._sem = asyncio.Semaphore(endpoint.concurrency)
        self._answered = False  # the server has sent at least one HTTP response in this session
        self._secret: str | None = None

    async def __aenter__(self) -> TeacherClient:
        from openai import AsyncOpenAI

        key = resolve_api_key(self.endpoint)
        self._secret = key if key != NO_KEY_PLACEHOLDER else None
        self._client = AsyncOpenAI(
            api_key=key, base_url=self.endpoint.base_url, timeout=self.endpoint.timeout, max_retries=0
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()
        self._client = None
        self._secret = None

    # -- public --------------------------------------------------------------------------------------------
    async def complete(self, request: TeacherRequest) -> Reply:
        """The reply to ``request``: from the cache when it succeeded before, else from the server."""
        key = request.cache_key(self.endpoint)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                hit.cached = True
                return hit
        reply = await self._with_retries(request)
        if self.cache is not None:
            self.cache.put(key, self.endpoint, request, reply)
        return reply

    # -- internals -----------------------------------------------------------------------------------------
    async def _send(self, request: TeacherRequest) -> Reply:
        assert self._client is not None, "use `async with TeacherClient(...)`"
        ep = self.endpoint
        if ep.api == "chat":
            resp = await self._client.chat.completions.create(
                model=ep.model,
                messages=[{"role": "user", "content": request.prompt}],
                temperature=request.temperature,
                max_tokens=request.max_tokens,
            )
        else:
            resp = await self._client.completions.create(
                model=ep.model, prompt=request.prompt, temperature=request.temperature, max_tokens=request.max_tokens
            )
        return reply_from_body(resp.model_dump(), ep.api)

    async def _with_retries(self, request: TeacherRequest) -> Reply:
        import openai

        ep = self.endpoint
        last = ""
        for attempt in range(1, ep.max_attempts + 1):
            retry_after: float | None = None
            async with self._sem:
                self.stats.requests += 1
                try:
                    reply = await self._send(request)
                except openai.APIStatusError as exc:
                    self._answered = True
                    status = exc.status_code
                    if status in (401, 403):
                        raise UserError(
                            f"{ep.section}: {ep.base_url} refused the credentials (HTTP {status}); check the key "
                            f"in ${ep.api_key_env} ({ep.section}.api_key_env)"
                        ) from None
                    if status == 404:
                        raise UserError(
                            f"{ep.section}: {ep.base_url} answered 404 Not Found for {ep.path.removeprefix('/v1')} "
                            f"(model {ep.model!r}); check {ep.section}.base_url (usually ending in /v1), "
                            f"{ep.section}.api and {ep.section}.model"
                        ) from None
                    detail = redact(_short(_server_message(exc)), self._secret)
                    last = f"HTTP {status}" + (f": {detail}" if detail else "")
                    if not (status in RETRY_STATUSES or status >= 500):
                        self.stats.failed += 1
                        raise RequestFailed(last, attempt) from None
                    retry_after = retry_after_seconds(getattr(exc.response, "headers", None))
                except openai.APITimeoutError:
                    last = f"timed out after {ep.timeout:g} s"
                except openai.APIConnectionError as exc:
                    if _is_connect_error(exc) and not self._answered:
                        cause = redact(_short(str(exc.__cause__ or exc)), self._secret)
                        raise UserError(
                            f"{ep.section}: cannot connect to {ep.base_url} ({cause}); check {ep.section}.base_url "
                            "and that the server is running"
                        ) from None
                    last = "connection dropped" if not _is_connect_error(exc) else "connection failed"
                except RequestFailed as exc:
                    self._answered = True
                    self.stats.failed += 1
                    raise RequestFailed(exc.reason, attempt) from None
                except openai.APIError as exc:  # e.g. a reply that is not a completion object
                    self._answered = True
                    self.stats.failed += 1
                    reason = redact(_short(f"{exc.__class__.__name__}: {exc}"), self._secret)
                    raise RequestFailed(reason, attempt) from None
                else:
                    self._answered = True
                    self.stats.succeeded += 1
                    self.stats.prompt_tokens += reply.prompt_tokens
                    self.stats.completion_tokens += reply.completion_tokens
                    reply.attempts = attempt
                    return reply
            if attempt < ep.max_attempts:
                self.stats.retries += 1
                delay = backoff_delay(attempt, ep.retry_base_delay, ep.retry_max_delay, retry_after, self._rng)
                self._log(f"{ep.section}: {last}; retry {attempt}/{ep.max_attempts - 1} in {delay:.1f} s")
                await asyncio.sleep(delay)
        self.stats.failed += 1
        raise RequestFailed(f"{last} (after {ep.max_attempts} attempts)", ep.max_attempts)
