"""The JSON Schemas and the AsyncAPI document in docs/ are generated from the event structs and current."""

from __future__ import annotations

import json

from events import contracts
from events.topics import INPUT_TOPIC_FIELDS, topic_types
from events.types import INPUT_TYPES, OUTPUT_TYPES, Event, tag_of
from processor.settings import TopicSettings


def test_docs_are_current() -> None:
    stale = [str(p) for p, text in contracts.rendered().items() if not p.exists() or p.read_text() != text]
    assert stale == [], f"regenerate with `python -m events.contracts`: {stale}"


def test_every_event_type_has_a_schema_and_a_message() -> None:
    tags = {tag_of(c) for c in (*INPUT_TYPES, *OUTPUT_TYPES)}
    assert set(contracts.json_schemas()) == tags
    doc = contracts.asyncapi()
    assert set(doc["components"]["messages"]) == tags | {"dead_letter"}
    schema = contracts.json_schemas()["remittance_received"]
    definition = schema["$defs"]["RemittanceReceived"]
    assert definition["properties"]["total_cents"]["type"] == "integer"
    assert "lines_total_cents" in definition["required"]


def test_asyncapi_topics_carry_the_types_the_processor_accepts() -> None:
    topics = TopicSettings()
    doc = contracts.asyncapi()
    channels = {c["address"]: c for c in doc["channels"].values()}
    for topic, tags in topic_types(topics).items():
        assert set(channels[topic]["messages"]) == set(tags)
    assert set(channels) == set(topics.model_dump().values())
    outputs = channels[topics.discrepancies]["messages"]
    claims = channels[topics.claims]["messages"]
    assert set(claims) == {"fsa_claim_adjudicated"}
    assert set(outputs) == {tag_of(c) for c in OUTPUT_TYPES} - {"fsa_claim_adjudicated"}
    # what the ledger does with each channel: it receives the inputs and sends the rest
    actions = {op["channel"]["$ref"].rsplit("/", 1)[1]: op["action"] for op in doc["operations"].values()}
    assert actions == {f: ("receive" if f in INPUT_TOPIC_FIELDS else "send") for f in topics.model_dump()}
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
