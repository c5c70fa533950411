"""What the API's models share (not a router)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["Timestamp"]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


#: A moment as the API sends it: RFC 3339 with its offset, as the OpenAPI ``date-time`` format
#: says (the store keeps UTC without one).
Timestamp = Annotated[datetime, AfterValidator(_utc)]
