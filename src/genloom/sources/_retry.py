"""Retries shared by the database sources (``sql``, ``mongodb``, ``redis``): exponential backoff,
the warning before each retry, and the loop around a call that is safe to repeat."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retries_note(attempt: int) -> str:
    """`` after N retries`` for an error message, or nothing when the first attempt failed."""
    return f" after {attempt} retries" if attempt else ""


def is_final(error: Exception, attempt: int, retries: int, is_transient: Callable[[Exception], bool]) -> bool:
    """True when ``error`` ends the read: no retry fixes it, or the ``retries`` are spent."""
    return not is_transient(error) or attempt >= retries


def wait_before_retry(
    log: logging.Logger,
    *,
    source: str,
    target: str,
    error: str,
    detail: str,
    attempt: int,
    retries: int,
    backoff_s: float,
) -> None:
    """Warn ``<source> source <target>: <error><detail>; retry a/n in Ts`` and sleep
    ``backoff_s * 2**attempt`` (``attempt`` counts from 0)."""
    delay = backoff_s * (2**attempt)
    log.warning(
        "%s source %s: %s%s; retry %d/%d in %.1fs",
        source,
        target,
        error,
        detail,
        attempt + 1,
        retries,
        delay,
    )
    time.sleep(delay)


def call_with_retries(
    fn: Callable[[], T],
    *,
    retries: int,
    is_transient: Callable[[Exception], bool],
    give_up: Callable[[Exception, int], Exception],
    wait: Callable[[Exception, int], None],
    passthrough: tuple[type[Exception], ...] = (),
    after_failure: Callable[[], None] | None = None,
) -> T:
    """``fn()``, called again after a transient failure up to ``retries`` times.

    A ``passthrough`` error is raised as it is; after any other, ``after_failure`` runs (drop a
    broken client), then ``give_up(error, attempt)`` is raised when the error is final, else
    ``wait(error, attempt)`` runs before the next call."""
    attempt = 0
    while True:
        try:
            return fn()
        except passthrough:
            raise
        except Exception as e:
            if after_failure is not None:
                after_failure()
            if is_final(e, attempt, retries, is_transient):
                raise give_up(e, attempt) from None
            wait(e, attempt)
            attempt += 1
