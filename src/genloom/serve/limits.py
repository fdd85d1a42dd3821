"""Per-key rate limits and token budgets: a token bucket per API key for requests per minute and
one for tokens per minute, in memory, in this process (each worker of ``--workers N`` keeps its
own, so N workers let a key through up to N times the limit).

A request takes one unit from its key's request bucket, or is refused (429) when less than one is
left. Tokens are counted after the request (its prompt and completion tokens, by the model's
tokenizer), since they are not known before: a request is admitted while the key's token bucket is
above zero and its tokens are then taken, so a large reply can leave the bucket in debt, and the
key waits until the debt has been refilled. Both buckets refill continuously (limit / 60 per
second) up to the per-minute limit, so a key may send a burst of one minute's worth at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

#: the bucket of callers without a key (possible on loopback without --require-key): they share it
ANONYMOUS = "anonymous"


@dataclass
class TokenBucket:
    """``capacity`` units, refilled at ``capacity / 60`` per second from ``updated``."""

    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        """Add what accrued since the last look (up to the capacity)."""
        self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60.0)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until the bucket holds ``amount`` (0 if it does)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.capacity


@dataclass(frozen=True)
class LimitExceeded:
    """Why a request was refused: which limit, its size and when to retry."""

    kind: str  # "requests" or "tokens"
    limit: int
    retry_after_s: float

    @property
    def retry_after(self) -> int:
        """Whole seconds for the Retry-After header (at least 1)."""
        return max(1, math.ceil(self.retry_after_s))

    def message(self, key: str) -> str:
        """The error message (OpenAI's wording)."""
        unit = "requests per min (RPM)" if self.kind == "requests" else "tokens per min (TPM)"
        who = "callers without an API key" if key == ANONYMOUS else f"API key {key}"
        return (
            f"Rate limit reached for {who} on {unit}: limit {self.limit}. "
            f"Please try again in {self.retry_after_s:.1f}s."
        )


class RateLimiter:
    """Token buckets per API key: ``admit`` before a request, ``charge`` its tokens after."""

    def __init__(
        self,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        clock: Callable[[], float],
    ) -> None:
        self.rpm, self.tpm, self.clock = requests_per_minute, tokens_per_minute, clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Some limit is set."""
        return self.rpm is not None or self.tpm is not None

    def _bucket(self, buckets: dict[str, TokenBucket], key: str, capacity: int, now: float) -> TokenBucket:
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = TokenBucket(float(capacity), float(capacity), now)
        bucket.refill(now)
        return bucket

    def admit(self, key: str | None) -> LimitExceeded | None:
        """Take one request from ``key``'s bucket; None when admitted, else why not."""
        key = key or ANONYMOUS
        now = self.clock()
        with self._lock:
            if self.tpm is not None:
                tokens = self._bucket(self._tokens, key, self.tpm, now)
                if tokens.level <= 0:  # in debt from earlier replies
                    return LimitExceeded("tokens", self.tpm, tokens.wait_for(1.0))
            if self.rpm is not None:
                requests = self._bucket(self._requests, key, self.rpm, now)
                if requests.level < 1:
                    return LimitExceeded("requests", self.rpm, requests.wait_for(1.0))
                requests.level -= 1
        return None

    def charge(self, key: str | None, tokens: int) -> None:
        """Take a finished request's tokens (prompt and completion) from ``key``'s budget."""
        if self.tpm is None or tokens <= 0:
            return
        key = key or ANONYMOUS
        with self._lock:
            self._bucket(self._tokens, key, self.tpm, self.clock()).level -= tokens

    def remaining(self, key: str | None) -> tuple[float | None, float | None]:
        """(requests, tokens) left to ``key`` now (None: that limit is off)."""
        key = key or ANONYMOUS
        now = self.clock()
        with self._lock:
            r = self._bucket(self._requests, key, self.rpm, now).level if self.rpm is not None else None
            t = self._bucket(self._tokens, key, self.tpm, now).level if self.tpm is not None else None
        return r, t
