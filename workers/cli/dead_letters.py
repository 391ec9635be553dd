"""``dora-forwarder dead-letters list|replay|purge``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import IO

import redis

from config import Settings
from forwarder.jsontext import printable
from forwarder.protocol import RedisKeys
from workers.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE, redis_client, when
from workers.ops.dead_letters import DeadLetter, list_letters, purge, replay, select


def format_letters(letters: Sequence[DeadLetter]) -> str:
    """A table of dead letters, one line each, reasons cut to fit."""
    if not letters:
        return "no dead letters"
    lines = [f"{'id':<17}  {'at (UTC)':<25}  {'incident / source':<40}  reason"]
    for letter in letters:
        # Anyone can write to the stream: nothing from it reaches a terminal unescaped.
        what = printable(letter.incident_id or f"({letter.source} entry)")
        reason = printable(letter.reason)
        reason = reason if len(reason) <= 90 else reason[:87] + "..."
        lines.append(f"{letter.letter_id:<17}  {when(letter.at_ms):<25}  {what:<40}  {reason}")
    return "\n".join(lines)


def _act(
    client: redis.Redis, keys: RedisKeys, args: argparse.Namespace, out: IO[str], err: IO[str]
) -> int:
    if args.action == "list":
        letters = list_letters(client, keys, args.limit)
        text = json.dumps([x.as_dict() for x in letters]) if args.json else format_letters(letters)
        print(text, file=out)
        return 0
    if not args.ids and not args.all:
        print(
            f"dora-forwarder: name dead letters by id, or use --all to {args.action} every one",
            file=err,
        )
        return EXIT_BAD_INPUT
    chosen = select(client, keys, [] if args.all else args.ids)
    if args.action == "replay":
        count = replay(client, keys, chosen)
        print(
            f"replayed {count} dead letter(s): back through ingest, to be delivered again", file=err
        )
        kept = [letter.letter_id for letter in chosen if not letter.replay_entries()]
        if kept:
            print(
                f"kept {len(kept)} dead letter(s) that hold nothing whole to send "
                f"(a payload cut at its size limit, or no event): {', '.join(kept[:10])}"
                + (" ..." if len(kept) > 10 else ""),
                file=err,
            )
        return 0
    if not args.yes:
        print(
            f"dora-forwarder: purge deletes {len(chosen)} dead letter(s) for good; "
            "add --yes to do it",
            file=err,
        )
        return EXIT_BAD_INPUT
    print(f"purged {purge(client, keys, chosen)} dead letter(s)", file=err)
    return 0


def cmd_dead_letters(
    settings: Settings, args: argparse.Namespace, out: IO[str], err: IO[str]
) -> int:
    """List, replay or purge dead letters; exit 1 for a bad request, 2 if Redis fails."""
    client = redis_client(settings)
    try:
        return _act(client, RedisKeys(settings.key_prefix), args, out, err)
    except LookupError as exc:
        print(f"dora-forwarder: {exc.args[0]}", file=err)
        return EXIT_BAD_INPUT
    except redis.RedisError as exc:
        print(
            f"dora-forwarder: cannot reach Redis at {settings.redis_url_for_logs}: {exc}", file=err
        )
        return EXIT_FAILURE
    finally:
        client.close()
