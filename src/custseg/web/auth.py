"""Users, passwords, browser sessions, API tokens, CSRF and sign-in throttling.

- Passwords are hashed with Argon2 (pwdlib); at least 8 characters, and not one of the most
  common passwords.
- A browser session is a random token in an HttpOnly, SameSite=Lax cookie (Secure behind
  HTTPS); the store keeps only its SHA-256, so signing out, expiry and disabling a user end it
  at once.  Each session has a CSRF token that every form and every cookie-authenticated
  request that changes state must send back (``csrf_token`` field or ``X-CSRF-Token`` header).
- A personal API token (``Authorization: Bearer cs_…``) is shown once, stored hashed,
  revocable; requests with a token need no CSRF token (a browser never sends it on its own).
- Failed sign-ins are counted per e-mail address and per client address; past the limit the
  answer is 429 until the window has passed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from custseg.errors import ConfigError
from custseg.web.config import WebSettings
from custseg.web.errors import Conflict, Throttled, Unauthorized
from custseg.web.store.models import ApiToken, LoginAttempt, LoginSession, User, now

__all__ = [
    "SESSION_COOKIE", "Identity", "hash_password", "verify_password", "check_password", "create_user",
    "sign_in", "start_session", "end_session", "user_for_session", "create_token", "revoke_token",
    "user_for_token", "csrf_matches", "Recent", "forget_access",
]

SESSION_COOKIE = "custseg_session"
#: how often a token's ``last_used_at`` is brought up to date
_USE_RECORDED_EVERY = timedelta(minutes=1)
TOKEN_PREFIX = "cs_"
MIN_PASSWORD = 8


@functools.cache
def _hasher():
    from pwdlib import PasswordHash

    return PasswordHash.recommended()


@functools.cache
def _common_passwords() -> frozenset[str]:
    text = Path(__file__).with_name("common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _hasher().verify(password, password_hash)
    except Exception:  # a malformed stored hash verifies nothing
        return False


def check_password(password: str) -> None:
    """Refuse a password that is too short or too common."""
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD} characters", param="password")
    if password.lower() in _common_passwords():
        raise ConfigError("the password is one of the most common passwords; choose another", param="password")


def normalise_email(email: str) -> str:
    email = (email or "").strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or " " in email or len(email) > 320 or not email.isprintable():
        raise ConfigError(f"{email!r} is not an e-mail address", param="email")
    return email


def create_user(db: Session, email: str, password: str, *, admin: bool = False) -> User:
    email = normalise_email(email)
    check_password(password)
    if db.scalar(sa.select(User).where(User.email == email)) is not None:
        raise Conflict(f"a user {email} exists already", param="email")
    user = User(email=email, password_hash=hash_password(password), is_admin=admin)
    db.add(user)
    db.flush()
    return user


# A hash to verify against when the e-mail is unknown, so that both answers take as long.
_DUMMY_HASH: str | None = None


def sign_in(db: Session, settings: WebSettings, email: str, password: str, client: str) -> User:
    """The user with this e-mail and password, or :class:`Unauthorized` (throttled when too many fail)."""
    global _DUMMY_HASH
    # no address holds a NUL, and PostgreSQL's text cannot: it is looked up (and counted) as U+FFFD
    email = (email or "").strip().lower().replace("\x00", "\ufffd")
    since = now() - timedelta(minutes=settings.throttle_minutes)
    failures = db.scalar(sa.select(sa.func.count()).select_from(LoginAttempt).where(
        LoginAttempt.at >= since, sa.or_(LoginAttempt.email == email, LoginAttempt.client == client)))
    if failures >= settings.login_attempts:
        raise Throttled(f"too many failed sign-ins; try again in {settings.throttle_minutes} minutes")
    user = db.scalar(sa.select(User).where(User.email == email))
    if user is None:
        _DUMMY_HASH = _DUMMY_HASH or hash_password(secrets.token_hex(8))
        verify_password(password or "", _DUMMY_HASH)
    if user is None or user.disabled or not verify_password(password or "", user.password_hash):
        db.add(LoginAttempt(email=email[:320], client=client[:64]))
        db.commit()
        raise Unauthorized("wrong e-mail address or password", param="password")
    return user


def start_session(db: Session, settings: WebSettings, user: User) -> tuple[str, LoginSession]:
    """A new session for ``user``: the cookie value (returned once) and its record."""
    token = secrets.token_urlsafe(32)
    record = LoginSession(token_hash=_digest(token), user_id=user.id, csrf_token=secrets.token_urlsafe(24),
                          expires_at=now() + timedelta(hours=settings.session_hours))
    db.add(record)
    db.flush()
    return token, record


def end_session(db: Session, token: str | None) -> None:
    if token:
        db.execute(sa.delete(LoginSession).where(LoginSession.token_hash == _digest(token)))


def user_for_session(db: Session, token: str | None) -> tuple[User, LoginSession] | None:
    if not token:
        return None
    record = db.scalar(sa.select(LoginSession).where(LoginSession.token_hash == _digest(token)))
    if record is None or record.expires_at <= now() or record.user.disabled:
        return None
    return record.user, record


def create_token(db: Session, user: User, name: str = "") -> tuple[str, ApiToken]:
    """A new API token: its text (shown once) and its record (which keeps only a hash)."""
    if name and not name.isprintable():
        raise ConfigError("a token name cannot hold control characters", param="name")
    text = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(user_id=user.id, name=(name or "")[:200], token_hash=_digest(text), prefix=text[:10])
    db.add(record)
    db.flush()
    return text, record


def revoke_token(db: Session, user: User, token_id: int) -> bool:
    from custseg.web.services.projects import is_id

    record = db.get(ApiToken, token_id) if is_id(token_id) else None
    if record is None or record.user_id != user.id or record.revoked_at is not None:
        return False
    record.revoked_at = now()
    forget_access()
    return True


def user_for_token(db: Session, text: str | None) -> User | None:
    if not text or not text.startswith(TOKEN_PREFIX):
        return None
    record = db.scalar(sa.select(ApiToken).where(ApiToken.token_hash == _digest(text)))
    if record is None or record.revoked_at is not None or record.user.disabled:
        return None
    moment = now()
    # Recorded to the minute: a write per request would queue every request on this row.
    if record.last_used_at is None or moment - record.last_used_at >= _USE_RECORDED_EVERY:
        record.last_used_at = moment
    return record.user


def csrf_matches(session: LoginSession, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf_token, sent)


@dataclass(frozen=True)
class Identity:
    """Who makes a request, and how: by session cookie (``session`` set) or by API token."""

    user: User
    session: LoginSession | None = None

    @property
    def by_cookie(self) -> bool:
        return self.session is not None


# --- what the fast path remembers ---------------------------------------------------------------

_access_generation = 0


def forget_access() -> None:
    """Empty every :class:`Recent` of this process (a token revoked, a member removed, a
    project deleted): the change holds at once here, and in other processes within their
    entries' lifetime."""
    global _access_generation
    _access_generation += 1


class Recent:
    """Answers to access questions (whose token is this? may this user read that run?) kept
    for ``seconds``, so the hot path of real-time assignment asks the store about once a
    second per key instead of on every request.  :func:`forget_access` empties them all."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._entries: dict = {}
        self._lock = threading.Lock()

    def get(self, key, seconds: float):
        """The answer kept for ``key`` if it is younger than ``seconds``, else None."""
        value, age = self.lookup(key)
        return value if age < seconds else None

    def lookup(self, key) -> tuple[Any, float]:
        """The answer kept for ``key`` and its age in seconds; ``(None, inf)`` when there is none
        (or it was kept before the last :func:`forget_access`)."""
        found = self._entries.get(key)
        if found is None:
            return None, math.inf
        value, at, generation = found
        if generation != _access_generation:
            return None, math.inf
        return value, time.monotonic() - at

    @staticmethod
    def generation() -> int:
        """How many times :func:`forget_access` has run: take it before asking the store, and
        give it to :meth:`put`, so that an answer asked before a revocation is not kept after it."""
        return _access_generation

    def put(self, key, value, generation: int | None = None) -> None:
        if generation is not None and generation != _access_generation:
            return
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()  # a flood of distinct keys costs lookups, never memory
            self._entries[key] = (value, time.monotonic(), _access_generation)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
