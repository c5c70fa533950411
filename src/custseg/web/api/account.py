"""Sign-in for scripts (an API token), who am I, and the user's tokens."""

from __future__ import annotations


from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from custseg.web import auth
from custseg.web.api.common import Timestamp
from custseg.web.config import WebSettings
from custseg.web.deps import client_of, get_db, get_settings, identity
from custseg.web.errors import NotFound

router = APIRouter(tags=["account"])


class Credentials(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    name: str = Field("", max_length=200, description="what the token is for")


class TokenOut(BaseModel):
    id: int
    token: str
    prefix: str


class TokenInfo(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked: bool


class Me(BaseModel):
    id: int
    email: str
    is_admin: bool


@router.post("/tokens", response_model=TokenOut, status_code=201)
def create_token(body: Credentials, request: Request, db: Session = Depends(get_db),
                 settings: WebSettings = Depends(get_settings)):
    """A personal API token for the e-mail and password (shown once; send it as ``Authorization: Bearer``)."""
    user = auth.sign_in(db, settings, body.email, body.password, client_of(request))
    text, record = auth.create_token(db, user, body.name)
    return TokenOut(id=record.id, token=text, prefix=record.prefix)


@router.get("/tokens", response_model=list[TokenInfo])
def list_tokens(who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    from sqlalchemy import select

    from custseg.web.store.models import ApiToken

    rows = db.scalars(select(ApiToken).where(ApiToken.user_id == who.user.id).order_by(ApiToken.id))
    return [TokenInfo(id=t.id, name=t.name, prefix=t.prefix, created_at=t.created_at, last_used_at=t.last_used_at,
                      revoked=t.revoked_at is not None) for t in rows]


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    if not auth.revoke_token(db, who.user, token_id):
        raise NotFound(f"no token {token_id}")


@router.get("/me", response_model=Me)
def me(who: auth.Identity = Depends(identity)):
    return Me(id=who.user.id, email=who.user.email, is_admin=who.user.is_admin)
