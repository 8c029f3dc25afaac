"""Topics are created explicitly at start; every input topic has the same partition count.

Replication factor, min.insync.replicas and retention come from the settings (defaults RF 3, min ISR 2,
retention.ms -1 on the input, discrepancy and claims topics). The embedded broker is one node, so there
the topics get RF 1 and min ISR 1 (``Settings.topic_replication_factor``). Topics that already exist are
compared with the settings and every difference is logged; only a wrong partition count stops the ledger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

from processor.exits import UsageError
from processor.kafka_clients import kafka_python_options
from processor.settings import Settings

log = logging.getLogger("benefits_ledger.topics")


class TopicLayoutError(RuntimeError):
    """An existing topic has a partition count the ledger cannot work with."""


@dataclass(frozen=True, slots=True)
class TopicDifference:
    """An existing topic whose shape differs from what the settings ask for."""

    topic: str
    setting: str  # the LEDGER_* variable that asks for it
    wanted: str
    found: str

    def __str__(self) -> str:
        return f"topic {self.topic}: {self.setting} asks for {self.wanted}, the topic has {self.found}"


def wanted_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic configs the ledger creates each of its topics with."""
    topics = settings.topics
    keep = {"retention.ms": str(settings.kafka_retention_ms)}
    isr = {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
    out = {t: {**isr, **keep} for t in (*topics.inputs(), topics.discrepancies, topics.claims)}
    dead = dict(isr)
    if settings.kafka_dead_letter_retention_ms is not None:
        dead["retention.ms"] = str(settings.kafka_dead_letter_retention_ms)
    out[topics.dead_letter] = dead
    return out


_SETTING_OF = {"retention.ms": "LEDGER_KAFKA_RETENTION_MS", "min.insync.replicas": "LEDGER_KAFKA_MIN_INSYNC_REPLICAS"}


def ensure_topics(bootstrap: str, settings: Settings) -> dict[str, int]:
    """Create missing topics; refuse input topics whose partition count differs from the setting; log how
    existing topics differ from the replication and retention settings."""
    configs = wanted_configs(settings)
    wanted = list(configs)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="benefits-ledger-admin",
                             bootstrap_timeout_ms=int(settings.connect_timeout_s * 1000),
                             **kafka_python_options(settings))
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics([
                    NewTopic(name=t, num_partitions=settings.partitions,
                             replication_factor=settings.topic_replication_factor, topic_configs=configs[t])
                    for t in missing
                ])
            except TopicAlreadyExistsError:
                pass  # another worker created them between our list and create
            except InvalidReplicationFactorError as exc:
                raise UsageError(
                    f"cannot create topics with replication factor {settings.topic_replication_factor}"
                    f" (LEDGER_KAFKA_REPLICATION_FACTOR): the cluster has fewer brokers ({exc})"
                ) from exc
        metas = admin.describe_topics(wanted)
        layout: dict[str, int] = {}
        replicas: dict[str, int] = {}
        for meta in metas:
            name = str(meta.get("name") or meta.get("topic"))
            layout[name] = len(meta["partitions"])
            replicas[name] = min((len(p.get("replica_nodes") or p.get("replicas") or []) for p in meta["partitions"]),
                                 default=0)
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in wanted],
                                       config_filter="all").get("topic", {})
    finally:
        admin.close()
    wrong = {t: n for t, n in layout.items() if t in settings.topics.inputs() and n != settings.partitions}
    if wrong:
        raise TopicLayoutError(
            f"input topics must all have {settings.partitions} partitions (LEDGER_PARTITIONS); found {wrong}"
        )
    for diff in topic_differences(settings, replicas, {t: {k: str(v.get("value")) for k, v in c.items()}
                                                       for t, c in found.items()}):
        log.warning("%s", diff)
    return layout


def topic_differences(
    settings: Settings, replicas: dict[str, int], configs: dict[str, dict[str, str]],
) -> list[TopicDifference]:
    """How the topics as described (replicas per partition, config values) differ from the settings.

    A config the broker does not report is not a difference (the embedded broker reports only what a
    topic was created with)."""
    out = []
    for topic, wanted in wanted_configs(settings).items():
        rf = replicas.get(topic)
        if rf is not None and rf != settings.topic_replication_factor:
            out.append(TopicDifference(topic, "LEDGER_KAFKA_REPLICATION_FACTOR",
                                       f"replication factor {settings.topic_replication_factor}",
                                       f"replication factor {rf}"))
        have = configs.get(topic, {})
        for key, value in wanted.items():
            if key in have and have[key] != value:
                setting = "LEDGER_KAFKA_DEAD_LETTER_RETENTION_MS" if (
                    topic == settings.topics.dead_letter and key == "retention.ms") else _SETTING_OF[key]
                out.append(TopicDifference(topic, setting, f"{key}={value}", f"{key}={have[key]}"))
    return out
