"""What other teams build on: the AsyncAPI 3 document passes the official parser with no warning, and
every schema is self-describing (descriptions, titled enums, date-time formats, headers, the ingest
output, the partitioner and the ordering rule)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from events import contracts
from events.types import DISCREPANCY_KINDS, OUTPUT_TYPES, tag_of

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "asyncapi" / "check.mjs"
PARSER = ROOT / "tools" / "asyncapi" / "node_modules" / "@asyncapi" / "parser"


def _properties(schemas: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(name, field, prop) for name, schema in schemas.items()
            for field, prop in (schema.get("properties") or {}).items()]


def test_asyncapi_document_passes_the_official_parser_with_no_warning() -> None:
    if shutil.which("node") is None or not PARSER.exists():
        pytest.skip("node or tools/asyncapi/node_modules missing: run `make asyncapi`")
    run = subprocess.run(["node", str(CHECK), str(ROOT / "docs" / "asyncapi.json")], capture_output=True,
                         text=True, timeout=120)
    result = json.loads(run.stdout)
    assert result["parsed"] and result["version"].startswith("3."), result
    assert result["errors"] == [] and result["warnings"] == [], result
    assert run.returncode == 0


def test_the_parser_check_fails_on_warnings_and_on_errors(tmp_path: Path) -> None:
    """The check is not vacuous: a 2.6 document shaped like the old one (no servers, contact, license,
    ids) gets warnings, and our document with a dangling channel reference gets an error."""
    if shutil.which("node") is None or not PARSER.exists():
        pytest.skip("node or tools/asyncapi/node_modules missing: run `make asyncapi`")
    old = {"asyncapi": "2.6.0", "info": {"title": "benefits-ledger", "version": "1"},
           "channels": {"ledger.payments": {"publish": {"message": {"payload": {"type": "object"}}}}}}
    broken = contracts.asyncapi()
    next(iter(broken["operations"].values()))["channel"] = {"$ref": "#/channels/nosuch"}
    results = []
    for name, doc in (("old.json", old), ("broken.json", broken)):
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        run = subprocess.run(["node", str(CHECK), str(path)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 1, run.stdout
        results.append(json.loads(run.stdout))
    warned = {w["code"] for w in results[0]["warnings"]}
    assert {"asyncapi-servers", "asyncapi-info-contact", "asyncapi-info-license", "asyncapi-id",
            "asyncapi2-message-messageId", "asyncapi2-operation-operationId"} <= warned
    assert any(e["code"] == "invalid-ref" for e in results[1]["errors"])


def test_every_property_of_every_schema_has_a_description() -> None:
    missing = [f"{tag}: {name}.{field}" for tag, schema in contracts.json_schemas().items()
               for name, field, prop in _properties(schema["$defs"]) if field != "type" and not prop.get("description")]
    doc = contracts.asyncapi()
    missing += [f"asyncapi: {name}.{field}" for name, field, prop in _properties(doc["components"]["schemas"])
                if field != "type" and not prop.get("description")]
    assert missing == []


def test_enums_are_titled_schemas_and_kind_is_the_fixed_list() -> None:
    schemas = contracts.asyncapi()["components"]["schemas"]
    inline = [f"{n}.{f}" for n, f, p in _properties(schemas)
              if "enum" in p or any("enum" in alt for alt in p.get("anyOf", []))]
    assert inline == [], "inline enums become AnonymousSchema models"
    assert all(s.get("title") == name for name, s in schemas.items())
    assert schemas["DiscrepancyKind"]["enum"] == sorted(DISCREPANCY_KINDS)
    for cls in OUTPUT_TYPES:
        if "kind" in cls.__struct_fields__:
            assert schemas[cls.__name__]["properties"]["kind"]["$ref"] == "#/components/schemas/DiscrepancyKind"
    per_type = contracts.json_schemas()["discrepancy_opened"]
    assert per_type["$defs"]["DiscrepancyKind"]["enum"] == sorted(DISCREPANCY_KINDS)


def test_occurred_at_is_a_date_time_everywhere() -> None:
    for tag, schema in contracts.json_schemas().items():
        definition = next(d for d in schema["$defs"].values() if d.get("properties", {}).get("type", {}).get(
            "const") == tag)
        assert definition["properties"]["occurred_at"]["format"] == "date-time", tag
        assert definition["properties"]["effective_on"]["format"] == "date", tag


def test_messages_declare_their_headers_and_key() -> None:
    doc = contracts.asyncapi()
    schemas = doc["components"]["schemas"]
    output = schemas["OutputHeaders"]
    assert set(output["required"]) == {"event_id", "content-type", "type"}
    for tag, message in doc["components"]["messages"].items():
        assert message["headers"]["$ref"].startswith("#/components/schemas/"), tag
        if tag != "dead_letter":
            assert message["bindings"]["kafka"]["key"]["$ref"] in (
                "#/components/schemas/AccountKey", "#/components/schemas/BroadcastKey"), tag
    for cls in OUTPUT_TYPES:
        assert doc["components"]["messages"][tag_of(cls)]["headers"]["$ref"].endswith("/OutputHeaders")


def test_partitioner_and_offset_ordering_are_documented() -> None:
    doc = contracts.asyncapi()
    text = doc["info"]["description"]
    assert "murmur2" in text and "murmur2_random" in text and "consistent_random" in text
    assert "offset order" in text and "occurred_at" in text
    assert "offset order" in doc["channels"]["discrepancies"]["description"]
    assert doc["servers"] and doc["id"] and doc["info"]["license"]["name"] == "MIT"


def test_ingest_json_output_validates_against_its_schema() -> None:
    from events.adapters.ingest import ingest
    from processor.settings import Settings
    from tests.fixtures import X12_SAMPLES

    files = sorted(str(p) for p in X12_SAMPLES.iterdir() if p.suffix in (".txt", ".edi"))
    report = ingest(files, Settings(), dry_run=True).to_json()
    report = json.loads(json.dumps(report))
    schemas = {**{f"{t}.json": s for t, s in contracts.json_schemas().items()},
               "ingest_report.json": contracts.ingest_report_schema()}
    registry: Registry = Registry().with_resources(
        (uri, Resource.from_contents(s)) for uri, s in schemas.items())
    validator = jsonschema.Draft202012Validator(schemas["ingest_report.json"], registry=registry,
                                                format_checker=jsonschema.FormatChecker())
    assert sum(len(f["events"]) for f in report["files"]) > 0
    validator.validate(report)
    broken = {**report, "files": [{**report["files"][0], "events": [{"type": "payment_received"}]}]}
    assert not validator.is_valid(broken), "an event missing its fields must not validate"
