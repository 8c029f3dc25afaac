"""Contracts for producers and subscribers, generated from the msgspec structs.

``docs/schemas/<type>.json``: a JSON Schema (2020-12) per event type, and ``ingest_report.json`` for the
output of ``benefits-ledger ingest --json``; ``docs/asyncapi.json``: an AsyncAPI 3.0 document with the
servers, every topic (channel) with its key, headers and messages, and what the ledger does with each
(operations). Every property has a description (events/descriptions.py), every enum is a titled schema
of its own. Regenerate with ``python -m events.contracts``; a test checks that docs/ is current and
another validates the AsyncAPI document with the official parser (``@asyncapi/parser``, 0 warnings).
"""

from __future__ import annotations

import inspect
import json
import sys
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from events import types as event_types
from events.descriptions import describe
from events.topics import INPUT_TOPIC_FIELDS, TopicSettings, topic_field_of
from events.types import INPUT_TYPES, OUTPUT_TYPES, Event, tag_of

DOCS = Path(__file__).resolve().parents[1] / "docs"

PARTITIONER = (
    "Account events are keyed by account_id and must be partitioned with murmur2 of the key (positive"
    " hash modulo the partition count), the default partitioner of the Java client, kafka-python and"
    " aiokafka. librdkafka's default (consistent_random) puts keys elsewhere: set"
    " partitioner=murmur2_random in confluent-kafka, kcat and other librdkafka clients, or the ledger"
    " dead-letters the record ('belongs on partition N, not M'). Every input topic has the same number of"
    " partitions (LEDGER_PARTITIONS), so one partition number holds all of an account."
)
ORDERING = (
    "Order: within a partition, records are applied and published in offset order. A subscriber follows"
    " one discrepancy (its discrepancy_id, on the partition of its account) by offset: opened, then"
    " amount_changed, then resolved or superseded. Do not sort by occurred_at: it is the upstream time of"
    " the triggering fact and may tie or run backwards."
)
OUTPUT_HEADERS = {
    "event_id": "The message's event_id (the same as in the body): deduplicate on it.",
    "content-type": "Always application/json.",
    "type": "The event type tag (the same as the body's type).",
}
INPUT_HEADERS = {
    "ledger-seq": "Optional: the producer's send sequence, which orders one producer's records that"
    " share a millisecond timestamp across topics.",
    "content-type": "Optional: application/json.",
    "type": "Optional: the event type tag; the body's type decides.",
}
DEAD_LETTER_HEADERS = {
    "reason": "Why the record could not be applied.",
    "field": "The field at fault, when one is.",
    "source_topic": "Topic the record came from.",
    "source_partition": "Partition it came from.",
    "source_offset": "Offset it had there.",
    "event_id": "Its event_id, when it could be read.",
}


def _doc(cls: type) -> str:
    """A class's docstring as the contracts print it: dedented with ``inspect.cleandoc``, so the text
    is the same whether the interpreter (3.13 dedents docstrings itself) or msgspec (0.23 does too)
    already stripped the indentation or not."""
    return inspect.cleandoc(cls.__doc__ or "")


def normalised(node: Any) -> Any:
    """Every ``description`` in a JSON Schema tree cleaned the same way as ``_doc``: what msgspec
    emits from a docstring differs between its releases and between Python versions."""
    if isinstance(node, dict):
        return {k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else normalised(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [normalised(v) for v in node]
    return node


# -- enrichment: descriptions, date-time formats, titled enums --------------------------------------

def _enum_names() -> dict[tuple[str, ...], str]:
    """Named Literal aliases of events.types (DiscrepancyKind, CoverageLine...) by their sorted values."""
    out: dict[tuple[str, ...], str] = {}
    for name, value in vars(event_types).items():
        if typing.get_origin(value) is typing.Literal:
            out[tuple(sorted(str(v) for v in typing.get_args(value)))] = name
    return out


def _struct_of(name: str) -> type | None:
    cls = getattr(event_types, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, msgspec.Struct) else None


def _datetime_fields(cls: type) -> set[str]:
    hints = typing.get_type_hints(cls)
    out = set()
    for field, hint in hints.items():
        args = typing.get_args(hint) or (hint,)
        if datetime in args:
            out.add(field)
    return out


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def enriched(defs: dict[str, Any], ref: str) -> dict[str, Any]:
    """msgspec's component schemas made self-describing: each property gets its description and
    ``format: date-time`` where it is a datetime, each inline enum becomes a titled schema of its own
    (referenced through ``ref``, e.g. ``#/components/schemas/{name}``), the type tag a ``const``."""
    names = _enum_names()
    out: dict[str, Any] = {}
    enums: dict[str, Any] = {}

    def enum_ref(values: list[Any], owner: str, field: str) -> dict[str, Any]:
        key = tuple(sorted(str(v) for v in values))
        name = names.get(key) or f"{owner}{''.join(p.title() for p in field.split('_'))}"
        enums[name] = {"title": name, "type": "string", "enum": sorted(key),
                       "description": f"One of the fixed {name} values."}
        return {"$ref": ref.format(name=name)}

    for name, schema in defs.items():
        schema = dict(schema)
        cls = _struct_of(name)
        schema.setdefault("title", name)
        tag = tag_of(cls) if cls is not None and issubclass(cls, Event) else _snake(name)
        stamps = _datetime_fields(cls) if cls is not None else set()
        props = {}
        for field, prop in (schema.get("properties") or {}).items():
            prop = dict(prop)
            if field == "type" and list(prop) == ["enum"] and len(prop["enum"]) == 1:
                prop = {"type": "string", "const": prop["enum"][0]}
            elif "enum" in prop:
                prop = {**enum_ref(prop.pop("enum"), name, field), **prop}
            elif "anyOf" in prop:
                prop["anyOf"] = [enum_ref(alt["enum"], name, field) if "enum" in alt else alt
                                 for alt in prop["anyOf"]]
            if field in stamps:
                if "anyOf" in prop:
                    prop["anyOf"] = [{**a, "format": "date-time"} if a.get("type") == "string" else a
                                     for a in prop["anyOf"]]
                else:
                    prop["format"] = "date-time"
            text = describe(tag, field)
            if text is not None:
                prop["description"] = text
            props[field] = prop
        if props:
            schema["properties"] = props
        out[name] = schema
    return {**out, **enums}


def json_schema(cls: type[Event]) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(cls)
    defs = enriched(schema.pop("$defs", {}), "#/$defs/{name}")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{tag_of(cls)}.json",
              "description": _doc(cls), **schema, "$defs": defs}
    return normalised(schema)


def json_schemas() -> dict[str, dict[str, Any]]:
    return {tag_of(cls): json_schema(cls) for cls in (*INPUT_TYPES, *OUTPUT_TYPES)}


def _nullable(kind: str, text: str) -> dict[str, Any]:
    return {"anyOf": [{"type": kind}, {"type": "null"}], "description": text}


def ingest_report_schema() -> dict[str, Any]:
    """What ``benefits-ledger ingest --json`` prints (one object); more keys may be added later."""
    tags = [tag_of(c) for c in INPUT_TYPES]
    error = {
        "type": "object", "title": "IngestError", "description": "One rejected segment, line or row.",
        "required": ["file", "reason"],
        "properties": {
            "file": {"type": "string", "description": "The file."},
            "line": _nullable("integer", "Line of the file (for X12, the segment's number in the file)."),
            "segment": _nullable("integer", "Position of the segment in its transaction set (as SE01 counts)."),
            "segment_id": _nullable("string", "X12 segment id (e.g. RMR)."),
            "loop": _nullable("string", "X12 loop (e.g. 2300B)."),
            "element": _nullable("string", "X12 element (e.g. RMR04) or CSV column at fault."),
            "code": _nullable("string", "pyx12's error code, when pyx12 found it."),
            "reason": {"type": "string", "description": "What is wrong."},
        },
    }
    finding = {
        "type": "object", "title": "FileDiscrepancy", "required": ["kind", "expected_cents", "actual_cents", "reason"],
        "description": "A finding about the file itself (a remittance that does not balance), in cents.",
        "properties": {
            "kind": {"type": "string", "description": "Discrepancy kind (remittance_total_mismatch)."},
            "expected_cents": {"type": "integer", "description": "Expected amount, in cents."},
            "actual_cents": {"type": "integer", "description": "Amount in the file, in cents."},
            "reason": {"type": "string", "description": "What does not add up."},
            "file": {"type": "string", "description": "The file."},
            "line": _nullable("integer", "Line of the file."),
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "ingest_report.json",
        "title": "IngestReport",
        "description": "The output of `benefits-ledger ingest --json`: per file, the events as published (or"
        " that would be, with --dry-run), the errors and the findings; then what was published.",
        "type": "object", "required": ["files", "dry_run", "strict", "published_events", "records"],
        "properties": {
            "files": {"type": "array", "description": "One entry per file, in the order given.", "items": {
                "type": "object", "title": "IngestedFile", "description": "One ingested file.",
                "required": ["path", "format", "events", "errors", "discrepancies", "notices", "audit"],
                "properties": {
                    "path": {"type": "string", "description": "The file as given."},
                    "format": {"title": "IngestFormat", "type": "string",
                               "enum": ["x12-834", "x12-820", "csv", "jsonl"],
                               "description": "Format recognised from the content."},
                    "events": {"type": "array", "description": "Events in the wire format (docs/schemas/).",
                               "items": {"oneOf": [{"$ref": f"{t}.json"} for t in tags]}},
                    "errors": {"type": "array", "items": error, "description": "Rejected parts of the file."},
                    "discrepancies": {"type": "array", "items": finding, "description": "Findings about the file."},
                    "notices": {"type": "array", "items": {"type": "string"},
                                "description": "Things worth knowing (a resubmission, audit members)."},
                    "audit": {"type": "array", "items": {"type": "object"},
                              "description": "With --compare: how an audit differs from the ledger."},
                },
            }},
            "dry_run": {"type": "boolean", "description": "Nothing was published (--dry-run)."},
            "strict": {"type": "boolean", "description": "--strict: nothing is published if a file has an error."},
            "published_events": {"type": "integer", "description": "Events published."},
            "records": {"type": "integer",
                        "description": "Kafka records sent (a broadcast event is one per partition)."},
        },
    }


# -- AsyncAPI 3 -------------------------------------------------------------------------------------

def _headers(fields: dict[str, str], required: list[str], title: str) -> dict[str, Any]:
    return {"type": "object", "title": title, "description": "Kafka record headers (UTF-8 strings).",
            "properties": {k: {"type": "string", "description": v} for k, v in fields.items()},
            **({"required": required} if required else {})}


def _camel(field: str) -> str:
    return "".join(p.title() for p in field.split("_"))


def asyncapi() -> dict[str, Any]:
    topics = TopicSettings()
    types = (*INPUT_TYPES, *OUTPUT_TYPES)
    _, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    schemas = enriched(components, "#/components/schemas/{name}")
    schemas["InputHeaders"] = _headers(INPUT_HEADERS, [], "InputHeaders")
    schemas["OutputHeaders"] = _headers(OUTPUT_HEADERS, list(OUTPUT_HEADERS), "OutputHeaders")
    schemas["DeadLetterHeaders"] = _headers(DEAD_LETTER_HEADERS, ["reason", "source_topic", "source_partition",
                                                                  "source_offset"], "DeadLetterHeaders")
    schemas["AccountKey"] = {"title": "AccountKey", "type": "string",
                             "description": "account_id of the event, UTF-8; partitioned by murmur2 (see info)."}
    schemas["BroadcastKey"] = {"title": "BroadcastKey", "type": "string", "const": "*",
                               "description": "'*': a broadcast event is sent once to every partition."}
    schemas["DeadLetterPayload"] = {"title": "DeadLetterPayload", "type": "string",
                                    "description": "The original record value, byte for byte (any bytes)."}
    messages: dict[str, Any] = {}
    for cls in types:
        tag = tag_of(cls)
        output = cls in OUTPUT_TYPES
        messages[tag] = {
            "name": tag,
            "title": cls.__name__,
            "summary": (_doc(cls) or cls.__name__).splitlines()[0],
            "description": _doc(cls) or cls.__name__,
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/" + ("OutputHeaders" if output else "InputHeaders")},
            "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
            "bindings": {"kafka": {
                "key": {"$ref": "#/components/schemas/" + ("BroadcastKey" if cls.BROADCAST else "AccountKey")},
                "bindingVersion": "0.5.0",
            }},
            "tags": [{"name": "output" if output else "input"}],
        }
    messages["dead_letter"] = {
        "name": "dead_letter", "title": "DeadLetter",
        "summary": "A record that could not be applied, with the reason in its headers.",
        "description": "Original key and value untouched; `benefits-ledger deadletter retry` re-submits them.",
        "contentType": "application/octet-stream",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"$ref": "#/components/schemas/DeadLetterPayload"},
        "tags": [{"name": "dead-letter"}],
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for field, name in topics.model_dump().items():
        tags = [tag_of(c) for c in types if topic_field_of(c) == field] or ["dead_letter"]
        is_input = field in INPUT_TOPIC_FIELDS
        config: dict[str, Any] = {"retention.ms": -1} if field != "dead_letter" else {}
        what = {"discrepancies": "Discrepancy events. " + ORDERING,
                "claims": "One fsa_claim_adjudicated per FSA claim.",
                "dead_letter": "Records that could not be applied: original key and bytes, reason in the headers."
                }.get(field, f"Input events ({', '.join(tags)}). {PARTITIONER}")
        channels[field] = {
            "address": name,
            "title": name,
            "description": f"{what} The name is the setting LEDGER_TOPICS__{field.upper()}.",
            "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in tags},
            "bindings": {"kafka": {"topic": name, "partitions": 4, "replicas": 3,
                                   "topicConfiguration": {**config, "min.insync.replicas": 2},
                                   "bindingVersion": "0.5.0"}},
        }
        action = "receive" if is_input else "send"
        op_id = f"{action}{_camel(field)}"
        operations[op_id] = {
            "action": action,
            "title": f"{'Fold' if is_input else 'Publish'} {name}",
            "summary": f"The ledger {'consumes' if is_input else 'publishes'} {name}.",
            "description": (f"Producers send these; the ledger folds them in offset order per partition and"
                            f" dead-letters what cannot be applied. {PARTITIONER}" if is_input else
                            f"The ledger publishes these (keyed by account); subscribers consume them. {ORDERING}"
                            if field != "dead_letter" else "The ledger publishes what it cannot apply."),
            "channel": {"$ref": f"#/channels/{field}"},
            "messages": [{"$ref": f"#/channels/{field}/messages/{t}"} for t in tags],
            "tags": [{"name": "input" if is_input else ("dead-letter" if field == "dead_letter" else "output")}],
        }
    return {
        "asyncapi": "3.1.0",
        "id": "urn:benefits-ledger:events",
        "info": {
            "title": "benefits-ledger",
            "version": "1.0.0",
            "description": "Events in and out of the benefits ledger. Input topics take events keyed by"
            " account_id; money is always integer cents; dates are ISO dates, times ISO 8601 with zone. Same"
            " event_id with the same body is a no-op, with another body a dead-lettered conflict. "
            f"{PARTITIONER} {ORDERING} JSON Schemas of each event: docs/schemas/<type>.json.",
            "contact": {"name": "benefits-ledger engineering"},
            "license": {"name": "MIT", "url": "https://opensource.org/licenses/MIT"},
            "tags": [
                {"name": "input", "description": "Events upstream systems publish to the ledger."},
                {"name": "output", "description": "Events the ledger publishes for subscribers."},
                {"name": "dead-letter", "description": "Records the ledger could not apply."},
            ],
        },
        "servers": {
            "production": {
                "host": "kafka-1:9092",
                "protocol": "kafka",
                "description": "Apache Kafka (docker-compose.yml: kafka-1, kafka-2, kafka-3, KRaft). The"
                " setting LEDGER_KAFKA_BOOTSTRAP_SERVERS names the brokers; TLS and SASL come from"
                " LEDGER_KAFKA_SECURITY_PROTOCOL and LEDGER_KAFKA_SASL_*.",
                "tags": [{"name": "production", "description": "The three-node cluster."}],
            },
            "embedded": {
                "host": "127.0.0.1:{port}",
                "protocol": "kafka",
                "description": "The embedded single-node broker `benefits-ledger up` starts when no broker is"
                " configured (memory only, replication factor 1).",
                "variables": {"port": {"description": "A free port chosen at start."}},
                "tags": [{"name": "development", "description": "One machine, nothing to install."}],
            },
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": normalised(schemas)},
    }


def rendered() -> dict[Path, str]:
    """Every generated file and its text."""
    out = {DOCS / "schemas" / f"{tag}.json": _dump(schema) for tag, schema in json_schemas().items()}
    out[DOCS / "schemas" / "ingest_report.json"] = _dump(ingest_report_schema())
    out[DOCS / "asyncapi.json"] = _dump(asyncapi())
    return out


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def main() -> int:
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
