"""``bridge outbox``: the bot events kept on disk, listed, and dead ones sent again (the same recovery
path as start-up: :meth:`bridge.delivery.Delivery.redeliver`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from bridge.settings import Settings


def outbox_command(args: argparse.Namespace, settings: Settings) -> int:
    """``bridge outbox list`` / ``bridge outbox replay``, over every outbox file in the data dir."""
    import json

    from bridge.delivery.outbox import Outbox

    data_dir = settings.server.data_dir
    paths = sorted(p for p in [data_dir / "outbox.sqlite3", *data_dir.glob("outbox-w*.sqlite3")] if p.exists())
    if not paths:
        print(f"no outbox in {data_dir} (BRIDGE_DATA_DIR)")
        return 0
    if args.outbox_command == "replay" and not settings.webhook.url:
        print("bridge outbox replay: BOT_WEBHOOK_URL is not set", file=sys.stderr)
        return 2
    status = 0
    replayed = delivered_total = failed_total = 0
    pending = dead = 0
    for path in paths:  # one file per worker process under bridge serve --workers
        outbox = Outbox(path)
        try:
            if args.outbox_command == "list":
                for e in outbox.events(state="dead" if args.dead else None):
                    if args.json:
                        print(
                            json.dumps(
                                {
                                    "webhook_id": e.webhook_id,
                                    "call_id": e.call_id,
                                    "sequence": e.sequence,
                                    "type": e.type,
                                    "state": e.state,
                                    "attempts": e.attempts,
                                    "created": e.created,
                                    "last_error": e.last_error,
                                    "body": json.loads(e.body),
                                }
                            )
                        )
                    else:
                        age = time.time() - e.created
                        print(
                            f"{e.state:7} {e.webhook_id}  {e.type:20} attempts={e.attempts} age={age:.0f}s"
                            + (f"  last error: {e.last_error}" if e.last_error else "")
                        )
                counts = outbox.counts()
                pending, dead = pending + counts["pending"], dead + counts["dead"]
                continue
            wanted = [e for e in outbox.events(state="dead") if args.webhook_id in (None, e.webhook_id)]
            for e in wanted:
                outbox.revive(e.webhook_id)
            if wanted:
                delivered, failed = asyncio.run(_replay(settings, outbox, wanted, args.timeout))
                replayed += len(wanted)
                delivered_total += delivered
                failed_total += failed
        finally:
            outbox.close()
    if args.outbox_command == "list":
        if not args.json:
            print(f"{pending} pending, {dead} dead ({', '.join(str(p) for p in paths)})")
        return 0
    if not replayed:
        print("nothing to replay")
        return 0
    left = replayed - delivered_total - failed_total
    print(
        f"replayed {replayed}: {delivered_total} delivered, {failed_total} dead again"
        + (f", {left} still pending" if left else "")
    )
    return status if delivered_total == replayed else 1


async def _replay(settings: Settings, outbox: Any, events: list[Any], timeout: float) -> tuple[int, int]:
    from bridge.delivery.outbox import OutboxWriter

    writer = OutboxWriter(outbox)
    writer.start()
    try:
        return await _replay_with(settings, writer, events, timeout)
    finally:
        await asyncio.to_thread(writer.close)


async def _replay_with(settings: Settings, writer: Any, events: list[Any], timeout: float) -> tuple[int, int]:
    from bridge.delivery import Delivery, replayed

    delivery = Delivery(settings.webhook, writer)
    now = time.time()
    calls = delivery.redeliver(replayed(e, now) for e in events)
    await delivery.aclose(timeout)
    return sum(c.counters.delivered for c in calls), sum(c.counters.failed for c in calls)
