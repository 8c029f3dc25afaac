"""Issue 12, item 10 (and the anchor key of item 7): outside the embedded demo, ingest and the processor
refuse to start without a key of at least 32 bytes from the environment or a secret file; the demo's
built-in key is announced whenever it is used."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from events.topics import TopicSettings
from processor.embedded import EmbeddedBroker
from processor.settings import Settings
from processor.topics import ensure_topics
from tests.e2e.test_cli import cli_argv
from tests.fixtures import X12_SAMPLES
from tests.integration.test_ingest import SSN_820, ssn_files
from tests.integration.test_pipeline import consume_all

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = X12_SAMPLES / "820_X218_list_bill_payment.edi"


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_argv(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


def bare_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """No LEDGER_* variable of the test run (no keys) unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update({"PYTHONPATH": str(REPO_ROOT), "LEDGER_DATA_DIR": str(data_dir), **extra})
    return env


@pytest.fixture
def configured(broker: EmbeddedBroker, tmp_path: Path) -> tuple[dict[str, str], TopicSettings]:
    """A configured broker (not the embedded demo) with topics of this test."""
    suffix = uuid.uuid4().hex[:12]
    defaults = TopicSettings()
    topics = TopicSettings(**{f: f"{getattr(defaults, f)}.{suffix}" for f in TopicSettings.model_fields})
    ensure_topics(broker.bootstrap, Settings(kafka_bootstrap_servers=broker.bootstrap, database_url="postgresql:///x",
                                             topics=topics, partitions=4, data_dir=tmp_path))
    env = bare_env(tmp_path, LEDGER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, LEDGER_PARTITIONS="4",
                   **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()})
    return env, topics


def test_ingest_refuses_without_a_key_or_with_a_short_one_and_publishes_nothing(
    configured: tuple[dict[str, str], TopicSettings], broker: EmbeddedBroker, tmp_path: Path,
) -> None:
    env, topics = configured
    missing = run(["ingest", str(SAMPLE)], env, tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "LEDGER_MEMBER_ID_HMAC_KEY" in missing.stderr and "at least 32 bytes" in missing.stderr
    dry = run(["ingest", "--dry-run", str(SAMPLE)], env, tmp_path)  # a dry run pseudonymises too
    assert dry.returncode == 2 and "LEDGER_MEMBER_ID_HMAC_KEY" in dry.stderr

    short = run(["ingest", str(SAMPLE)], {**env, "LEDGER_MEMBER_ID_HMAC_KEY": "x" * 31}, tmp_path)
    assert short.returncode == 2 and "the key has 31 bytes; at least 32 are needed" in short.stderr
    key_file = tmp_path / "short.key"
    key_file.write_text("only-sixteen-byt\n")
    from_file = run(["ingest", str(SAMPLE)], {**env, "LEDGER_MEMBER_ID_HMAC_KEY_FILE": str(key_file)}, tmp_path)
    assert from_file.returncode == 2 and f"({key_file}): the key has 16 bytes" in from_file.stderr
    demo = run(["ingest", str(SAMPLE)],
               {**env, "LEDGER_MEMBER_ID_HMAC_KEY": "benefits-ledger-development-key-change-me"}, tmp_path)
    assert demo.returncode == 2 and "public demo key" in demo.stderr
    assert consume_all(broker.bootstrap, topics.payments) == [], "nothing was published"

    key_file.write_bytes(os.urandom(24).hex().encode() + b"\n")  # 48 bytes from a secret file
    ok = run(["ingest", str(SAMPLE)], {**env, "LEDGER_MEMBER_ID_HMAC_KEY_FILE": str(key_file)}, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "DEMO key" not in ok.stderr
    assert len(consume_all(broker.bootstrap, topics.payments)) == 7  # the sample's 6 lines and remittance


def test_pseudonyms_depend_on_the_key_from_the_secret_file(tmp_path: Path) -> None:
    """The same SSN under two secret keys: two unrelated pseudonyms, neither the demo key's."""
    paths = [str(p) for p in ssn_files(tmp_path)]
    outputs = []
    for n in range(2):
        key = tmp_path / f"key-{n}"
        key.write_bytes(os.urandom(32))
        # a configured broker makes this not the demo; --dry-run publishes nothing
        env = bare_env(tmp_path, LEDGER_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", LEDGER_MEMBER_ID_HMAC_KEY_FILE=str(key))
        done = run(["ingest", "--dry-run", "--json", *paths], env, tmp_path)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    demo = run(["ingest", "--dry-run", "--json", *paths], bare_env(tmp_path), tmp_path)
    assert demo.returncode == 0 and "DEMO key" in demo.stderr  # announced, on stderr
    pseudonyms = [{w for w in text.replace('"', " ").split() if w.startswith("ssn-")} for text in
                  (*outputs, demo.stdout)]
    assert all(pseudonyms) and not (pseudonyms[0] & pseudonyms[1]) and not (pseudonyms[0] & pseudonyms[2])
    for ssn in SSN_820:
        assert all(ssn not in text for text in outputs)


def test_the_processor_refuses_to_start_without_the_anchor_key(
    settings_factory: Callable[..., Settings], tmp_path: Path,
) -> None:
    settings = settings_factory()
    env = bare_env(tmp_path, LEDGER_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers or "",
                   LEDGER_DATABASE_URL=settings.database_url or "",
                   **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()})
    up = run(["up", "--role", "processor"], env, tmp_path)
    assert up.returncode == 2 and "LEDGER_ANCHOR_HMAC_KEY" in up.stderr and "Traceback" not in up.stderr
    short = run(["up", "--role", "processor"], {**env, "LEDGER_ANCHOR_HMAC_KEY": "short"}, tmp_path)
    assert short.returncode == 2 and "the key has 5 bytes" in short.stderr
