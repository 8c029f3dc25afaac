"""Flexible spending accounts through the real broker and PostgreSQL: claims in on the fsa topic,
adjudications out on the claims topic (not the discrepancy topic), the fsa_account projection row, the
dead letter of an election over the limit, replay equal to live, and the ``fsa`` command."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime

import psycopg
import pytest

from events import codec
from events.types import Event, FsaClaimAdjudicated, FsaClaimSubmitted, FsaContributionReceived, FsaElectionMade
from processor import cli
from processor.app import open_ledger
from processor.settings import Settings
from replay.verify import verify
from tests.integration.support import consume_all
from tests.integration.test_pipeline import process_until

T0 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)


def _events(account: str) -> list[Event]:
    common = {"account_id": account, "occurred_at": T0, "source": "fsa-admin"}
    return [
        FsaElectionMade(event_id=f"{account}-el-dc", effective_on=date(2026, 1, 1), election_id="EL-DC",
                        member_id=account, plan_year=2026, account_type="dependent_care", election_cents=500_000,
                        **common),
        FsaContributionReceived(event_id=f"{account}-co-1", effective_on=date(2026, 1, 15), contribution_id="PR-1",
                                plan_year=2026, account_type="dependent_care", amount_cents=19_231,
                                payer_id="AG-001", **common),
        FsaClaimSubmitted(event_id=f"{account}-cl-1", effective_on=date(2026, 1, 21), claim_id="CL-1",
                          account_type="dependent_care", service_date=date(2026, 1, 20), amount_cents=40_000,
                          description="day care, week 3", **common),
        FsaElectionMade(event_id=f"{account}-el-h", effective_on=date(2026, 1, 1), election_id="EL-H",
                        member_id=account, plan_year=2026, account_type="health", election_cents=240_000, **common),
        FsaClaimSubmitted(event_id=f"{account}-cl-2", effective_on=date(2026, 1, 22), claim_id="CL-2",
                          account_type="health", service_date=date(2026, 1, 2), amount_cents=150_000, **common),
        FsaElectionMade(event_id=f"{account}-el-over", effective_on=date(2026, 1, 1), election_id="EL-OVER",
                        member_id=account, plan_year=2026, account_type="health", election_cents=340_001, **common),
    ]


def test_a_claim_is_adjudicated_on_the_claims_topic_and_projected_in_fsa_account(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_factory(consumer_group=f"fsa-{uuid.uuid4().hex[:8]}")
    topics = settings.topics
    account = f"M-FSA-{uuid.uuid4().hex[:6]}"
    with open_ledger(settings) as ledger:
        pub = ledger.publisher()
        try:
            pub.publish(_events(account))
            pub.flush()
            sent = pub.records_sent
        finally:
            pub.close()
        asyncio.run(process_until(ledger, sent, relay=True))
        store = ledger.store()
        counts = store.counts()
        assert (counts.received, counts.applied, counts.dead_lettered) == (6, 5, 1)
        [dead] = store.dead_letters()
        assert dead.topic == topics.fsa and dead.field == "election_cents"
        assert "fsa.health_limit_cents" in dead.reason
        rows = {(r.plan_year, r.account_type): r for r in store.fsa_accounts(account)}
        dc, health = rows[(2026, "dependent_care")], rows[(2026, "health")]
        assert (dc.election_cents, dc.contributed_cents, dc.reimbursed_cents, dc.available_cents) == (
            500_000, 19_231, 19_231, 0)
        assert (health.election_cents, health.reimbursed_cents, health.available_cents) == (240_000, 150_000, 90_000)
        with psycopg.connect(ledger.dsn) as conn:
            table = conn.execute(
                "SELECT account_type, election_cents, contributed_cents, reimbursed_cents, available_cents"
                " FROM fsa_account WHERE account_id = %s ORDER BY account_type", (account,)).fetchall()
        assert table == [("dependent_care", 500_000, 19_231, 19_231, 0), ("health", 240_000, 0, 150_000, 90_000)]

    claims = consume_all(settings.kafka_bootstrap_servers or "", topics.claims)
    decided = {}
    for m in claims:
        event = codec.decode_output(m.value)
        assert isinstance(event, FsaClaimAdjudicated)
        assert m.key == account.encode() and dict(m.headers)["event_id"] == event.event_id.encode()
        decided[event.claim_id] = event
    assert len(claims) == 2 and set(decided) == {"CL-1", "CL-2"}
    partial = decided["CL-1"]
    assert (partial.decision, partial.requested_cents, partial.approved_cents) == ("partially_approved", 40_000, 19_231)
    assert partial.causation_id == f"{account}-cl-1" and "$192.31 contributed" in partial.reason
    full = decided["CL-2"]
    assert (full.decision, full.approved_cents, full.available_after_cents) == ("approved", 150_000, 90_000)
    discrepancy_topic = consume_all(settings.kafka_bootstrap_servers or "", topics.discrepancies)
    assert all(not isinstance(codec.decode_output(m.value), FsaClaimAdjudicated) for m in discrepancy_topic)

    report = verify(ledger.dsn, settings.plan)
    assert report.mismatches == [] and report.tables["fsa_account"] == 2

    monkeypatch.setenv("LEDGER_DATABASE_URL", ledger.dsn)
    assert cli.main(["--json", "fsa", account]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(a["account_type"], a["available_cents"]) for a in shown["fsa_accounts"]] == [
        ("dependent_care", 0), ("health", 90_000)]
    assert [(c["claim_id"], c["decision"], c["approved_cents"], c["requested_cents"], c["service_date"])
            for c in shown["claims"]] == [("CL-1", "partially_approved", 19_231, 40_000, "2026-01-20"),
                                          ("CL-2", "approved", 150_000, 150_000, "2026-01-02")]
    assert "$192.31 contributed" in shown["claims"][0]["reason"]
    assert cli.main(["fsa", account]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:3] == ["year", "type", "member"]
    assert "$2,400.00" in text[2] and "$900.00" in text[2] and "open" in text[2]
    assert any(line.startswith("claim CL-1 (2026 dependent_care, service 2026-01-20, submitted 2026-01-21):"
                               " partially_approved $192.31 of $400.00") for line in text)
