"""Delivering one compressed report, and what to do when it fails.

Retry on no answer (refused, timeout, DNS), 5xx and 429 (honouring Retry-After); a 401 or
403 means the device key is no longer valid; any other 4xx is final for that report.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from smartmon.agent.sender import BadAnswer, Refused, Sender, Unreachable

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
# A server asking for more than this is probably confused; don't go silent for hours.
RETRY_AFTER_MAX_S = 600.0
_AUTH_STATUSES = frozenset({401, 403})

Verdict = Literal["sent", "retry", "auth", "refused"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to one attempt to deliver a report."""

    verdict: Verdict
    reason: str = ""
    retry_after: float | None = None
    duplicate: bool = False
    status: int | None = None


def post_compressed(sender: Sender, device_key: str, body: bytes) -> Delivery:
    """POST one gzip'd report and classify the outcome; never raises a SendError."""
    try:
        result = sender.post_report(device_key, body)
    except Unreachable as exc:
        return Delivery("retry", exc.reason)
    except Refused as exc:
        return classify_status(exc)
    except BadAnswer as exc:
        # The server took the request but said something unexpected: sending it again is
        # safe (reportId dedupe) and better than losing the report.
        return Delivery("retry", str(exc))
    return Delivery("sent", duplicate=result.duplicate)


def classify_status(error: Refused) -> Delivery:
    """Map an error answer onto retry / auth / refused."""
    reason = f"{error.status} {error.detail}"
    if error.status in _AUTH_STATUSES:
        return Delivery("auth", reason, status=error.status)
    if error.status == 429 or error.status >= 500:
        return Delivery("retry", reason, retry_after=error.retry_after, status=error.status)
    return Delivery("refused", reason, status=error.status)


class Backoff:
    """Capped exponential backoff with jitter; Retry-After from the server wins when longer."""

    def __init__(
        self,
        base: float = BACKOFF_BASE_S,
        cap: float = BACKOFF_CAP_S,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt, counting this failure."""
        ceiling = min(self.cap, self.base * 2.0 ** min(self.failures, 32))
        self.failures += 1
        # "Equal jitter": at least half the ceiling, so retries never bunch up at zero.
        delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S))
        return delay

    def reset(self) -> None:
        """The server answered: start again from the base delay."""
        self.failures = 0
