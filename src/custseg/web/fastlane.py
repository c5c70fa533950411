"""The hot path of real-time assignment, as plain ASGI in front of the routes.

``POST …/runs/{run_id}/assign`` with an API token, and its baseline ``POST /api/v1/echo``, are
the requests a CRM or a website sends a thousand times a second.  Through FastAPI each costs
1–5 ms of CPU before any scoring (the dependency chain's trips to the thread pool, pydantic
over every customer, the JSON encoder); here the same request is answered in the event loop:

- the body is parsed once and its shape checked as the route's model checks it: an assign
  body by the run's own reader (:func:`custseg.web.services.assign.read_customers`: only the
  fields the model reads become Python objects, whole numbers stay whole), the echo body by
  orjson;
- the token's user and the user's access to the run are asked of the store about once a
  second per key (:class:`custseg.web.auth.Recent`; revoking a token, removing a member or
  deleting a project forgets them at once in this process, within a second in others), and
  when many requests find the answer expired at once, one of them asks and the others wait
  for its answer (without that, a thousand requests a second sent a few dozen identical
  queries to the thread pool each second, and those requests' p99 was 81 ms);
- the model is the compiled one the route uses (:func:`custseg.web.services.assign.model_of`).

Anything this path does not answer exactly as the route would — no token, a cookie, a body that
is not plain JSON of the right shape, a whole number too wide for orjson, a run that is not
done, any error — is handed to the app with its body, unchanged, and the route answers it.  So
the errors, their shape and the OpenAPI document stay the route's; this module only makes the
common case fast.  The business rules (who may assign, what is audited, how a customer is
scored) are the assign service's.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec
import orjson
from starlette.concurrency import run_in_threadpool

from custseg.web import auth
from custseg.web.services import assign as assign_service

__all__ = ["FastLane", "MAX_CUSTOMERS", "INLINE_CUSTOMERS"]

#: the most customers one request may carry (the route's model says the same)
MAX_CUSTOMERS = 100_000
#: batches up to this size are scored in the event loop; larger ones in the thread pool, so a
#: big batch does not hold up the small requests behind it
INLINE_CUSTOMERS = 2_000
#: how long an answer about a token or a run's access is kept
ACCESS_SECONDS = 1.0
#: an answer this old is refreshed in the background while it is still given
REFRESH_SECONDS = 0.5

_ASSIGN = re.compile(r"/api/v1/projects/([0-9]{1,18})/runs/([0-9]{1,18})/assign")
_ECHO = "/api/v1/echo"
#: orjson reads a whole number wider than 64 bits as a float; the route keeps it whole.  A body
#: with 19 digits in a row goes to the route (found by mapping every digit to "0": a tenth of
#: the time of a regular expression)
_DIGITS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_WIDE_NUMBER = b"0" * 19
_JSON = b"application/json"
#: writes whole numbers of any width (orjson stops at 64 bits)
_WIDE_ENCODER = msgspec.json.Encoder()


class _Decline(Exception):
    """The fast path does not answer this request: the app does."""


class FastLane:
    """ASGI middleware answering the common assign and echo requests itself (module docstring)."""

    def __init__(self, app, settings, store) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self._store_url = str(store.engine.url) if store is not None else ""
        self.tokens = auth.Recent()
        self.access = auth.Recent()
        #: the questions being asked of the store now, by cache and key
        self._asking: dict[tuple, asyncio.Future] = {}
        #: requests answered here (the others went to the app)
        self.answered = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"]
        match = None if path == _ECHO else _ASSIGN.fullmatch(path)
        if path != _ECHO and match is None:
            return await self.app(scope, receive, send)
        token, length = self._headers(scope)
        if length is None or length > self.settings.json_limit or (match is not None and token is None):
            return await self.app(scope, receive, send)
        body, messages = await _read(receive, length)
        try:
            if body is None:  # longer than it said, or the client left
                raise _Decline
            if match is None:
                answer = orjson.dumps({"customers": _customers(body)})
            else:
                answer = await self._assign(token, int(match[1]), int(match[2]), body)
        except _Decline:
            return await self.app(scope, _replay(messages, receive), send)
        self.answered += 1
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", _JSON), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    @staticmethod
    def _headers(scope) -> tuple[str | None, int | None]:
        """The bearer token (None without one, or with a cookie) and the declared body length
        (None unless the body is declared JSON of a known length)."""
        token = length = None
        json = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, text = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    token = text.strip().decode("latin-1")
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"content-type":
                json = value.split(b";")[0].strip().lower() == _JSON
            elif name == b"cookie":
                return None, None  # the route checks a session's CSRF token
        return token, (length if json else None)

    async def _assign(self, token: str, project_id: int, run_id: int, body: bytes) -> bytes:
        user_id = await self._recent(self.tokens, token, self._user_of, token)
        if not user_id:
            raise _Decline  # the route answers 401
        run = await self._recent(self.access, (user_id, project_id, run_id), self._run_of, user_id, project_id, run_id)
        if not run:
            raise _Decline  # not found, not a member, not done: the route says which
        model = assign_service.cached_model(self.settings, *run)
        if model is None:  # first use: read and compile it off the event loop
            model = await run_in_threadpool(assign_service.model_of, self.settings, *run)
        try:
            customers = assign_service.read_customers(model, body)
        except assign_service.UnreadBody:
            raise _Decline from None
        if not 1 <= len(customers) <= MAX_CUSTOMERS:
            raise _Decline
        if len(customers) <= INLINE_CUSTOMERS:
            found = assign_service.score_customers(model, customers)
        else:
            found = await run_in_threadpool(assign_service.score_customers, model, customers)
        try:
            answer = orjson.dumps({"assignments": found})
        except (TypeError, orjson.JSONEncodeError):  # an id wider than 64 bits: whole, as the route writes it
            try:
                answer = _WIDE_ENCODER.encode({"assignments": found})
            except (TypeError, msgspec.EncodeError):
                raise _Decline from None  # a value only the route's encoder carries
        if not assign_service.counted_bulk(self._store_url, user_id, project_id, run_id, len(customers)):
            await run_in_threadpool(self._audit, user_id, project_id, run_id, len(customers))
        return answer

    async def _recent(self, cache: auth.Recent, key, ask, *args):
        """The answer ``cache`` keeps for ``key``, else ``ask(*args)`` in the thread pool, asked
        once however many requests want it at the same time.  An answer older than
        ``REFRESH_SECONDS`` is still given while a fresh one is asked for in the background, so
        the requests of the moment it expires do not all wait for the store."""
        found, age = cache.lookup(key)
        if found is not None and age < ACCESS_SECONDS:
            if age >= REFRESH_SECONDS:
                self._ask(cache, key, ask, args)
            return found
        try:
            return await asyncio.shield(self._ask(cache, key, ask, args))
        except Exception:  # the store failed: the route answers, with its error
            raise _Decline from None

    def _ask(self, cache: auth.Recent, key, ask, args) -> asyncio.Future:
        """The question being asked of the store for ``key``: asked now unless it already is;
        its answer is kept when it comes (unless access was forgotten meanwhile)."""
        asking = (id(cache), key)
        future = self._asking.get(asking)
        if future is None:
            generation = cache.generation()
            future = asyncio.ensure_future(run_in_threadpool(ask, *args))
            self._asking[asking] = future

            def settle(done: asyncio.Future) -> None:
                self._asking.pop(asking, None)
                if not done.cancelled() and done.exception() is None:
                    cache.put(key, done.result(), generation)

            future.add_done_callback(settle)
        return future

    def _user_of(self, token: str) -> int:
        with self.store.session() as db:
            user = auth.user_for_token(db, token)
            db.commit()  # the token's last use, to the minute
            return user.id if user is not None else 0

    def _run_of(self, user_id: int, project_id: int, run_id: int) -> tuple | bool:
        with self.store.session() as db:
            try:
                return assign_service.done_run(db, user_id, project_id, run_id)
            except Exception:  # the route answers it, with the right error
                return False

    def _audit(self, user_id: int, project_id: int, run_id: int, customers: int) -> None:
        with self.store.session() as db:
            assign_service.audit_bulk(db, user_id, project_id, run_id, customers)
            db.commit()


def _customers(body: bytes) -> list:
    """The echo body's customers if it is ``{"customers": [{…}, …]}`` as the route's model takes it."""
    if _WIDE_NUMBER in body.translate(_DIGITS):
        raise _Decline
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Decline from None
    customers = data.get("customers") if type(data) is dict else None
    if type(customers) is not list or not 1 <= len(customers) <= MAX_CUSTOMERS:
        raise _Decline
    for customer in customers:
        if type(customer) is not dict:
            raise _Decline
    return customers


async def _read(receive, length: int) -> tuple[bytes | None, list[dict[str, Any]]]:
    """The body if it arrives whole within ``length`` bytes (else None), and the messages read."""
    messages = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        size += len(message.get("body", b""))
        if size > length:
            return None, messages
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in messages), messages


def _replay(messages: list[dict[str, Any]], receive):
    """A ``receive`` that gives the app the messages already read, then what follows."""
    queue = list(messages)

    async def replayed():
        if queue:
            return queue.pop(0)
        return await receive()

    return replayed
