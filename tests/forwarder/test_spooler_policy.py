"""The spooler's two decisions: when an error sends events to the spool, how long to wait."""

from __future__ import annotations

import pytest
import redis

from forwarder import PublishError, SpoolFullError
from forwarder._spooler import DRAIN_BACKOFF_MAX_S, drain_delay_s, redis_unreachable


def caused_by(cause: BaseException | None) -> PublishError:
    error = PublishError("could not enqueue")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "spool"),
    [
        (caused_by(redis.ConnectionError("refused")), True),
        (caused_by(redis.TimeoutError("timed out")), True),
        (caused_by(redis.BusyLoadingError("loading")), True),  # a ConnectionError too
        (caused_by(redis.ResponseError("OOM command not allowed")), False),
        (caused_by(redis.ReadOnlyError("READONLY")), False),
        (caused_by(None), False),
        (SpoolFullError("full"), False),
    ],
)
def test_only_an_unanswered_publish_is_spooled(error: PublishError, spool: bool) -> None:
    """Connection errors and timeouts spool; a refusal from Redis is raised to the caller."""
    assert redis_unreachable(error) is spool


def test_the_drain_delay_doubles_up_to_its_cap_and_is_never_zero() -> None:
    """Upper bound of each draw doubles per failure, capped; the lower bound is half of it."""
    uppers = [drain_delay_s(failures, lambda low, high: high) for failures in range(1, 12)]
    lowers = [drain_delay_s(failures, lambda low, high: low) for failures in range(1, 12)]
    assert uppers[:3] == [0.1, 0.2, 0.4]
    assert max(uppers) == DRAIN_BACKOFF_MAX_S
    assert all(low > 0 for low in lowers)
    assert drain_delay_s(10_000, lambda low, high: high) == DRAIN_BACKOFF_MAX_S
