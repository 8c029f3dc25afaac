"""Topics and the one table that says which event type travels on which topic.

Producers (the publisher, the relay), the processor's validation and the generated contracts all
read this table; nothing else maps event types to topics.
"""

from __future__ import annotations

from pydantic import BaseModel

from events.types import INPUT_TYPES, OUTPUT_TYPES, Event, tag_of


class TopicSettings(BaseModel):
    """Kafka topic names. Every input topic has the same partition count."""

    model_config = {"frozen": True, "extra": "forbid"}

    enrollment: str = "ledger.enrollment"
    rates: str = "ledger.rates"
    billing: str = "ledger.billing"
    payments: str = "ledger.payments"
    control: str = "ledger.control"
    discrepancies: str = "ledger.discrepancies"
    dead_letter: str = "ledger.dead-letter"
    fsa: str = "ledger.fsa"  # input: FSA elections, contributions and claims
    claims: str = "ledger.fsa-claims"  # output: one adjudication per FSA claim
    notices: str = "ledger.notices"  # input: notices issued to agency coordinators and members
    workflow: str = "ledger.workflow"  # input: people's actions on discrepancies (assign, note, waive, ...)

    def inputs(self) -> tuple[str, ...]:
        return tuple(getattr(self, f) for f in INPUT_TOPIC_FIELDS)

    def name(self, topic_field: str) -> str:
        return str(getattr(self, topic_field))


# The TopicSettings field of every topic that carries input events, in a stable order.
INPUT_TOPIC_FIELDS: tuple[str, ...] = (
    "enrollment", "rates", "billing", "payments", "control", "fsa", "notices", "workflow",
)

# event type tag -> the TopicSettings field of the topic it travels on
TOPIC_FIELD_OF: dict[str, str] = {
    "enrollment_changed": "enrollment",
    "rate_published": "rates",
    "premium_billed": "billing",
    "adjustment_posted": "billing",
    "payment_received": "payments",
    "payment_reversed": "payments",
    "remittance_received": "payments",
    "remittance_line_posted": "payments",
    "remittance_funded": "payments",
    "refund_issued": "payments",
    "refund_returned": "payments",
    "cash_applied": "payments",
    "day_closed": "control",
    "billing_cycle_closed": "control",
    "fsa_election_made": "fsa",
    "fsa_contribution_received": "fsa",
    "fsa_claim_submitted": "fsa",
    # a topic of its own: notices are produced by the notice tool and the notifier, not by the systems
    # that send money or enrollment, and a mail room or document archive subscribes to them alone
    "notice_issued": "notices",
    "discrepancy_opened": "discrepancies",
    "discrepancy_amount_changed": "discrepancies",
    "discrepancy_superseded": "discrepancies",
    "discrepancy_resolved": "discrepancies",
    "fsa_claim_adjudicated": "claims",
    "discrepancy_assigned": "workflow",
    "discrepancy_noted": "workflow",
    "discrepancy_status_set": "workflow",
    "discrepancy_waived": "workflow",
    "discrepancy_written_off": "workflow",
    "waiver_approved": "workflow",
    "waiver_rejected": "workflow",
    "retro_change_approved": "workflow",
    "retro_change_rejected": "workflow",
    "discrepancy_dismissed": "workflow",
    "discrepancy_reopened": "workflow",
    "discrepancy_closed": "discrepancies",
}

_declared = {tag_of(t) for t in (*INPUT_TYPES, *OUTPUT_TYPES)}
assert set(TOPIC_FIELD_OF) == _declared, f"types without a topic: {_declared ^ set(TOPIC_FIELD_OF)}"
assert {TOPIC_FIELD_OF[tag_of(t)] for t in INPUT_TYPES} <= set(INPUT_TOPIC_FIELDS)


def topic_field_of(event: Event | type[Event]) -> str:
    cls = event if isinstance(event, type) else type(event)
    return TOPIC_FIELD_OF[tag_of(cls)]


def topic_for(event: Event | type[Event], topics: TopicSettings) -> str:
    """The topic name an event (or event type) is published on."""
    return topics.name(topic_field_of(event))


def topic_types(topics: TopicSettings) -> dict[str, frozenset[str]]:
    """Which input event types belong on which input topic (the processor refuses the others)."""
    by_topic: dict[str, set[str]] = {topics.name(f): set() for f in INPUT_TOPIC_FIELDS}
    for t in INPUT_TYPES:
        by_topic[topic_for(t, topics)].add(tag_of(t))
    return {topic: frozenset(tags) for topic, tags in by_topic.items()}
