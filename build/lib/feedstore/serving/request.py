"""The ranking request: what a ranker knows when it asks for features (time and device)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from feedstore.core.contracts import DEVICES
from feedstore.core.errors import FeedstoreError


@dataclass(frozen=True)
class RankingContext:
    """What a ranker knows about the request."""

    request_ts: datetime
    device: str = "mobile"

    def __post_init__(self):
        if self.device not in DEVICES:
            raise FeedstoreError(f"device must be one of {list(DEVICES)}, got {self.device!r}")
        if self.request_ts.tzinfo is None:
            object.__setattr__(self, "request_ts", self.request_ts.replace(tzinfo=timezone.utc))
