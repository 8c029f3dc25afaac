"""Topics are created explicitly at start; every input topic has the same partition count."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from processor.settings import Settings


class TopicLayoutError(RuntimeError):
    """An existing topic has a partition count the ledger cannot work with."""


def ensure_topics(bootstrap: str, settings: Settings) -> dict[str, int]:
    """Create missing topics; refuse input topics whose partition count differs from the setting."""
    wanted = [*settings.topics.inputs(), settings.topics.discrepancies, settings.topics.claims,
              settings.topics.dead_letter]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="benefits-ledger-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(name=t, num_partitions=settings.partitions, replication_factor=1) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another worker created them between our list and create
        layout: dict[str, int] = {}
        for meta in admin.describe_topics(wanted):
            layout[str(meta.get("name") or meta.get("topic"))] = len(meta["partitions"])
    finally:
        admin.close()
    wrong = {t: n for t, n in layout.items() if t in settings.topics.inputs() and n != settings.partitions}
    if wrong:
        raise TopicLayoutError(
            f"input topics must all have {settings.partitions} partitions (LEDGER_PARTITIONS); found {wrong}"
        )
    return layout
