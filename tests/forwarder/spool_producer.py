"""A producer for the spool's crash test: publishes incidents ``FIRST``..``LAST`` (a start,
then a finish, each), printing ``ok N`` after each incident's finish returned, ``paused N``
and waiting for a line on standard input at ``PAUSE``, and ``drained`` once its spool is
empty at the end.

    python -m tests.forwarder.spool_producer URL PREFIX SPOOL_DIR FIRST LAST PAUSE
"""

from __future__ import annotations

import sys

from forwarder import Publisher
from harness.stack import wait_until

STARTED_AT = 1_700_000_000


def incident_id(number: int) -> str:
    return f"spool-incident-{number:06d}"


def main() -> None:
    url, prefix, spool_dir, first, last, pause = sys.argv[1:7]
    publisher = Publisher.from_url(url, key_prefix=prefix, timeout_s=0.5, spool_dir=spool_dir)
    for number in range(int(first), int(last)):
        if number == int(pause):
            print(f"paused {number}", flush=True)
            sys.stdin.readline()
        publisher.incident_started(
            id=incident_id(number), services=["checkout"], started_at=STARTED_AT + number
        )
        publisher.incident_finished(incident_id(number), finished_at=STARTED_AT + number + 60)
        print(f"ok {number}", flush=True)
    wait_until(lambda: publisher.spooled == 0, timeout_s=60, what="the spool to drain")
    publisher.close()
    print("drained", flush=True)


if __name__ == "__main__":
    main()
