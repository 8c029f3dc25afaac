"""The JSON Schemas and the AsyncAPI document in docs/ are generated from the event structs and current."""

from __future__ import annotations

import json

from events import contracts
from events.topics import topic_types
from events.types import INPUT_TYPES, OUTPUT_TYPES, Event, tag_of
from processor.settings import TopicSettings


def test_docs_are_current() -> None:
    stale = [str(p) for p, text in contracts.rendered().items() if not p.exists() or p.read_text() != text]
    assert stale == [], f"regenerate with `python -m events.contracts`: {stale}"


def test_every_event_type_has_a_schema_and_a_message() -> None:
    tags = {tag_of(c) for c in (*INPUT_TYPES, *OUTPUT_TYPES)}
    assert set(contracts.json_schemas()) == tags
    doc = contracts.asyncapi()
    assert set(doc["components"]["messages"]) == tags
    schema = contracts.json_schemas()["remittance_received"]
    definition = schema["$defs"]["RemittanceReceived"]
    assert definition["properties"]["total_cents"] == {"type": "integer"}
    assert "lines_total_cents" in definition["required"]


def test_asyncapi_topics_carry_the_types_the_processor_accepts() -> None:
    topics = TopicSettings()
    channels = contracts.asyncapi()["channels"]
    for topic, tags in topic_types(topics).items():
        refs = channels[topic]["publish"]["message"]["oneOf"]
        assert {r["$ref"].rsplit("/", 1)[1] for r in refs} == set(tags)
    assert set(channels) == set(topics.model_dump().values())
    outputs = channels[topics.discrepancies]["subscribe"]["message"]["oneOf"]
    claims = channels[topics.claims]["subscribe"]["message"]["oneOf"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in claims} == {"fsa_claim_adjudicated"}
    assert {r["$ref"].rsplit("/", 1)[1] for r in outputs} == {tag_of(c) for c in OUTPUT_TYPES} - {
        "fsa_claim_adjudicated"}
    json.dumps(channels)


def test_schemas_do_not_depend_on_docstring_indentation() -> None:
    """Python 3.13 and msgspec 0.23 dedent docstrings, older ones do not: the contracts print the same text."""

    class Probe(Event, frozen=True, kw_only=True, tag="indentation_probe"):
        """First line.

        Second paragraph, indented as in source.
            A deeper line keeps its relative indent.
        """

        note: str

    expected = "First line.\n\nSecond paragraph, indented as in source.\n    A deeper line keeps its relative indent."
    schema = contracts.json_schema(Probe)
    assert schema["description"] == expected
    assert schema["$defs"]["Probe"]["description"] == expected
    raw_indented = {"a": [{"description": "First line.\n\n    Second paragraph, indented as in source.\n"
                                          "        A deeper line keeps its relative indent.\n    "}]}
    raw_flush = {"a": [{"description": expected}]}
    assert contracts.normalised(raw_indented) == contracts.normalised(raw_flush) == raw_flush
