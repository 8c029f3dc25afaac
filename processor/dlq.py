"""The records the processor sends to the dead-letter topic, whole or by reference.

A dead letter carries the original key and bytes and headers that say where it came from and why it
was refused. One larger than ``dead_letter_record_bytes_max`` would be refused by the broker
(Kafka's message.max.bytes, 1 MB by default) and stop the partition, so it is sent by reference
instead: a small JSON body naming topic, partition, offset, size, sha256 and reason. Its bytes are
kept whole in PostgreSQL (the ``dead_letter`` row of the same batch), where ``deadletter list`` and
``deadletter retry`` find them.
"""

from __future__ import annotations

import hashlib
import json

from projections.model import DeadLetterRow

REFERENCE_HEADER = "dead_letter_reference"  # present (value b"1") on a record sent by reference
HEADERS_BYTES_ALLOWANCE = 16 * 1024  # room for the headers of a record on top of its key and value


def dead_letter_record(
    d: DeadLetterRow, *, bytes_max: int,
) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """(value, key, headers) of the dead-letter topic record for ``d``."""
    headers = [
        ("reason", d.reason.encode()),
        ("source_topic", d.topic.encode()),
        ("source_partition", str(d.partition).encode()),
        ("source_offset", str(d.offset).encode()),
    ]
    if d.field:
        headers.append(("field", d.field.encode()))
    if d.event_id:
        headers.append(("event_id", d.event_id.encode()))
    key = d.key
    if len(d.raw) + len(key or b"") <= bytes_max:
        return d.raw, key, headers
    digest = hashlib.sha256(d.raw).hexdigest()
    reference = {
        "dead_letter_reference": {
            "log_id": d.log_id, "topic": d.topic, "partition": d.partition, "offset": d.offset,
            "bytes": len(d.raw), "sha256": digest, "reason": d.reason, "field": d.field,
            "stored_in": "PostgreSQL table dead_letter (log_id, topic, partition, offset)",
        }
    }
    headers += [(REFERENCE_HEADER, b"1"), ("sha256", digest.encode()), ("bytes", str(len(d.raw)).encode())]
    if key is not None and len(key) > bytes_max // 2:
        key = hashlib.sha256(key).hexdigest().encode()  # an oversized key is referenced by its hash too
    return json.dumps(reference, sort_keys=True).encode(), key, headers
