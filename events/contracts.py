"""Contracts for producers and subscribers, generated from the msgspec structs.

``docs/schemas/<type>.json``: a JSON Schema (2020-12) per event type; ``docs/asyncapi.json``: an
AsyncAPI 2.6 document naming every topic, its key and its messages. Regenerate with
``python -m events.contracts``; a test checks that the files in docs/ are current.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from events.topics import TopicSettings, topic_field_of
from events.types import INPUT_TYPES, OUTPUT_TYPES, Event, tag_of

DOCS = Path(__file__).resolve().parents[1] / "docs"


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


def json_schema(cls: type[Event]) -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(cls)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{tag_of(cls)}.json",
              "description": _doc(cls), **schema}
    return normalised(schema)


def json_schemas() -> dict[str, dict[str, Any]]:
    return {tag_of(cls): json_schema(cls) for cls in (*INPUT_TYPES, *OUTPUT_TYPES)}


def asyncapi() -> dict[str, Any]:
    topics = TopicSettings()
    types = (*INPUT_TYPES, *OUTPUT_TYPES)
    _, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for cls in types:
        tag = tag_of(cls)
        broadcast = cls.BROADCAST
        messages[tag] = {
            "name": tag,
            "title": cls.__name__,
            "summary": (_doc(cls) or cls.__name__).splitlines()[0],
            "contentType": "application/json",
            "bindings": {"kafka": {"key": {
                "type": "string",
                "description": "'*' on every partition (one copy each)" if broadcast else
                "account_id (Kafka's default murmur2 partitioner keeps an account on one partition)",
            }}},
            "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
        }
    for field, name in topics.model_dump().items():
        tags = [tag_of(c) for c in types if topic_field_of(c) == field]
        if field == "dead_letter":
            channels[name] = {
                "description": "records that could not be applied: original key and bytes untouched; headers"
                " reason, field, source_topic, source_partition, source_offset",
                "subscribe": {"message": {"name": "dead_letter", "contentType": "application/octet-stream"}},
            }
            continue
        operation = "subscribe" if field in ("discrepancies", "claims") else "publish"
        channels[name] = {
            "description": f"LEDGER_TOPICS__{field.upper()}",
            operation: {"message": {"oneOf": [{"$ref": f"#/components/messages/{t}"} for t in tags]}},
        }
    return {
        "asyncapi": "2.6.0",
        "info": {"title": "benefits-ledger", "version": "1",
                 "description": "Input topics take events keyed by account_id; money is integer cents."},
        "defaultContentType": "application/json",
        "channels": channels,
        "components": {"messages": messages, "schemas": normalised(components)},
    }


def rendered() -> dict[Path, str]:
    """Every generated file and its text."""
    out = {DOCS / "schemas" / f"{tag}.json": _dump(schema) for tag, schema in json_schemas().items()}
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
