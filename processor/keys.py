"""The ledger's two secret keys: member pseudonyms (ingest) and archive checkpoints (projections/anchor.py).

Each comes from ``LEDGER_<NAME>`` or a file named by ``LEDGER_<NAME>_FILE`` (a secret mounted by the
deployment; a text file's trailing newline is ignored, a binary file is the key byte for byte) and must
have at least 32 bytes. Without one, the embedded demo (no broker and no database configured) uses a
built-in key and says so on every start: that key is in this source, so a pseudonym made with it can be
reversed (an SSN has only 10^9 values) and a checkpoint signed with it proves nothing. Anything else
refuses to start.
"""

from __future__ import annotations

import logging
from typing import Any

from processor.settings import DEVELOPMENT_HMAC_KEY

KEY_BYTES_MIN = 32
DEMO_MEMBER_ID_KEY = DEVELOPMENT_HMAC_KEY.encode()  # kept: pseudonyms in existing demo data stay the same
DEMO_ANCHOR_KEY = b"benefits-ledger-demo-anchor-key-public-not-a-secret"

log = logging.getLogger("benefits_ledger.keys")
_announced: set[str] = set()


class KeyRequired(RuntimeError):
    """No usable key: the message names the setting and what to do."""


def member_id_key(settings: Any) -> bytes:
    """The member pseudonym HMAC key (ingest refuses to run without one outside the embedded demo)."""
    return _key(settings, "member_id_hmac_key", DEMO_MEMBER_ID_KEY,
                "member pseudonyms (an SSN is recoverable from its pseudonym under this key)")


def anchor_key(settings: Any) -> bytes:
    """The checkpoint HMAC key (the processor and verify-archive refuse to run without one outside the demo)."""
    return _key(settings, "anchor_hmac_key", DEMO_ANCHOR_KEY,
                "archive checkpoints (anyone can forge a checkpoint under this key)")


def embedded_demo(settings: Any) -> bool:
    """The embedded default: neither a broker nor a database is configured."""
    return bool(settings.kafka_bootstrap_servers is None and settings.database_url is None)


def _file_key(raw: bytes) -> bytes:
    """The key a secret file holds: text (base64, hex, a passphrase) without its trailing newline; any
    other content (``head -c 32 /dev/urandom > key``) as it is, since a random last byte may be a newline."""
    text = raw.rstrip(b"\r\n")
    if text and all(0x20 <= b < 0x7F for b in text):
        return text
    return raw


def _key(settings: Any, field: str, demo: bytes, purpose: str) -> bytes:
    env = f"LEDGER_{field.upper()}"
    secret = getattr(settings, field)
    path = getattr(settings, f"{field}_file")
    if secret is not None and path is not None:
        raise KeyRequired(f"{env} and {env}_FILE are both set: set one")
    if path is not None:
        try:
            key = _file_key(path.read_bytes())
        except OSError as exc:
            raise KeyRequired(f"{env}_FILE: cannot read {path}: {exc.strerror or exc}") from exc
        where = f"{env}_FILE ({path})"
    elif secret is not None:
        key, where = secret.get_secret_value().encode(), env
    elif embedded_demo(settings):
        if field not in _announced:
            _announced.add(field)
            log.warning("using the built-in DEMO key for %s: fine for the embedded demo, never for real data;"
                        " set %s or %s_FILE (at least %d bytes)", purpose, env, env, KEY_BYTES_MIN)
        return demo
    else:
        raise KeyRequired(
            f"{env}: no key set, and the built-in one is for the embedded demo only ({purpose}); set {env} or"
            f" {env}_FILE to a secret of at least {KEY_BYTES_MIN} bytes (e.g. `head -c 32 /dev/urandom | base64`)"
        )
    if len(key) < KEY_BYTES_MIN:
        raise KeyRequired(f"{where}: the key has {len(key)} bytes; at least {KEY_BYTES_MIN} are needed")
    if key == demo and not embedded_demo(settings):
        raise KeyRequired(f"{where}: this is the public demo key; set a secret of your own")
    return key
