"""The ledger under test, in its own process, so that its CPU time is its own.

    python -m bench._ledger_worker CONFIG_JSON

CONFIG_JSON: {"bootstrap", "dsn", "topics": {TopicSettings fields}, "partitions", "data_dir",
"consumer_group", "fold": "real" | "none", "batch_events_max": null or a number}. It opens the ledger
through the composition root (processor/app.py: migrations, topics, log identity), prints ``ready``,
then runs the processor loop and the relay as ``run_services`` does, until SIGTERM. ``"fold": "none"``
is the honest ceiling: the same ProcessorLoop and BatchProcessor (decode and validate, dedupe against
the store, archive COPY with its keys and hash chain, positions, offset commits, anchor checkpoints,
the relay's outbox poll) with a fold that changes nothing, so no projection, snapshot or discrepancy
is written.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
from typing import Any

from pydantic import SecretStr

from events.topics import TopicSettings
from processor.app import Ledger, open_ledger
from processor.settings import Settings


def no_fold(*_: Any) -> list[Any]:
    """The ceiling's fold: reaches no account (the batch still archives and positions the event)."""
    return []


async def serve(ledger: Ledger, fold: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    processor = ledger.processor(fold=no_fold) if fold == "none" else ledger.processor()
    relay = ledger.relay()
    await processor.start()
    await relay.start()
    try:  # the loop of processor.app.run_services, with the processor chosen above
        while not stop.is_set():
            await processor.run_once()
            await relay.publish_pending()
    finally:
        await processor.stop()
        await relay.publish_pending()
        await relay.stop()


def main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    if config["fold"] not in ("real", "none"):
        raise SystemExit(f"fold must be 'real' or 'none', not {config['fold']!r}")
    settings = Settings(
        kafka_bootstrap_servers=config["bootstrap"], database_url=config["dsn"],
        topics=TopicSettings(**config["topics"]), partitions=config["partitions"],
        data_dir=config["data_dir"], consumer_group=config["consumer_group"],
        anchor_hmac_key=SecretStr(secrets.token_hex(32)),  # a throwaway key: the checkpoints are part of the work
        **({"batch_events_max": config["batch_events_max"]} if config.get("batch_events_max") else {}),
    )
    with open_ledger(settings) as ledger:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        asyncio.run(serve(ledger, config["fold"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
