"""processor/keys.py: where the secret keys come from, and when the built-in demo keys may be used."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from processor import keys
from processor.keys import DEMO_ANCHOR_KEY, DEMO_MEMBER_ID_KEY, KeyRequired, anchor_key, member_id_key
from processor.settings import Settings

CONFIGURED = {"kafka_bootstrap_servers": "kafka:9092", "database_url": "postgresql://db/ledger"}


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEDGER_MEMBER_ID_HMAC_KEY", "LEDGER_ANCHOR_HMAC_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(keys, "_announced", set())


def test_the_embedded_demo_uses_the_built_in_keys_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(data_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="benefits_ledger.keys"):
        assert member_id_key(settings) == DEMO_MEMBER_ID_KEY
        assert anchor_key(settings) == DEMO_ANCHOR_KEY
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("DEMO key" in w and "never for real data" in w for w in warnings)
    assert "LEDGER_MEMBER_ID_HMAC_KEY" in warnings[0] and "LEDGER_ANCHOR_HMAC_KEY" in warnings[1]


@pytest.mark.parametrize("configured", [{"kafka_bootstrap_servers": "kafka:9092"},
                                        {"database_url": "postgresql://db/ledger"}, CONFIGURED])
def test_anything_but_the_embedded_demo_refuses_without_a_key(tmp_path: Path, configured: dict[str, str]) -> None:
    settings = Settings(data_dir=tmp_path, **configured)
    with pytest.raises(KeyRequired, match=r"LEDGER_MEMBER_ID_HMAC_KEY: no key set.*at least 32 bytes"):
        member_id_key(settings)
    with pytest.raises(KeyRequired, match="LEDGER_ANCHOR_HMAC_KEY: no key set"):
        anchor_key(settings)


def test_a_key_shorter_than_32_bytes_is_refused_even_in_the_demo(tmp_path: Path) -> None:
    with pytest.raises(KeyRequired, match="has 31 bytes; at least 32"):
        member_id_key(Settings(data_dir=tmp_path, member_id_hmac_key="k" * 31))
    assert member_id_key(Settings(data_dir=tmp_path, member_id_hmac_key="k" * 32)) == b"k" * 32


def test_a_key_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "anchor.key"
    path.write_bytes(b"s" * 40 + b"\n")
    assert anchor_key(Settings(data_dir=tmp_path, anchor_hmac_key_file=path, **CONFIGURED)) == b"s" * 40
    with pytest.raises(KeyRequired, match="LEDGER_ANCHOR_HMAC_KEY_FILE: cannot read"):
        anchor_key(Settings(data_dir=tmp_path, anchor_hmac_key_file=tmp_path / "missing", **CONFIGURED))
    with pytest.raises(KeyRequired, match="both set"):
        anchor_key(Settings(data_dir=tmp_path, anchor_hmac_key_file=path, anchor_hmac_key="s" * 40))


def test_a_binary_key_file_is_the_key_byte_for_byte_even_when_it_ends_in_a_newline_byte(tmp_path: Path) -> None:
    path = tmp_path / "anchor.key"
    raw = bytes(range(1, 32)) + b"\n"  # `head -c 32 /dev/urandom` may well end in 0x0a
    path.write_bytes(raw)
    assert anchor_key(Settings(data_dir=tmp_path, anchor_hmac_key_file=path, **CONFIGURED)) == raw


def test_the_public_demo_key_is_refused_outside_the_demo(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, member_id_hmac_key=DEMO_MEMBER_ID_KEY.decode(), **CONFIGURED)
    with pytest.raises(KeyRequired, match="public demo key"):
        member_id_key(settings)
