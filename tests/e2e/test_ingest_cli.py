"""``benefits-ledger ingest`` as a user runs it: --dry-run, --json, --strict, errors in text and JSON."""

from __future__ import annotations

import uuid
from pathlib import Path

from events import codec
from events.types import PaymentReceived
from processor.embedded import EmbeddedBroker
from processor.settings import Settings, TopicSettings
from processor.topics import ensure_topics
from tests.conftest import ledger_keys_env
from tests.e2e.test_cli import base_env, run_cli
from tests.fixtures import X12_SAMPLES
from tests.integration.test_pipeline import consume_all

SAMPLES = X12_SAMPLES
ALL = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".txt", ".edi"))


def test_dry_run_json_reports_every_sample_with_its_events_and_no_errors(tmp_path: Path) -> None:
    run = run_cli(["ingest", "--dry-run", "--json", *map(str, ALL)], base_env(tmp_path), tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    report = run.json()
    assert [(Path(f["path"]).name, f["format"], len(f["events"]), f["errors"], f["discrepancies"])
            for f in report["files"]] == [
        ("820_X218_list_bill_payment.edi", "x12-820", 7, [], []),
        ("820_X218_list_bill_remittance_only.edi", "x12-820", 4, [], []),
        ("834_pyx12_deident_family.txt", "x12-834", 3, [], []),
        ("834_pyx12_deident_term.txt", "x12-834", 2, [], []),
    ]
    first = report["files"][0]["events"][0]
    assert first["type"] == "payment_received" and first["amount_cents"] == 3000
    assert report["dry_run"] is True and report["published_events"] == 0


def test_errors_and_discrepancies_are_reported_in_text_and_json(tmp_path: Path) -> None:
    text = (SAMPLES / "820_X218_list_bill_payment.edi").read_text()
    bad = tmp_path / "bad.edi"
    bad.write_text(text.replace("RMR*IG*555777**45", "RMR*IG*555777**4X5").replace("SE*21*0001", "SE*22*0001"))
    plain = run_cli(["ingest", "--dry-run", str(bad)], base_env(tmp_path), tmp_path, timeout=60)
    assert plain.returncode == 1
    assert f"{bad}:15: segment RMR #13 loop 2300B RMR04: " in plain.stderr
    assert f"{bad}:23: segment SE" in plain.stderr and "SE01" in plain.stderr
    assert "remittance_total_mismatch: expected 21000 cents, actual 25500 cents" in plain.stderr
    assert "6 events, 2 errors, 1 discrepancies" in plain.stdout

    as_json = run_cli(["ingest", "--dry-run", "--json", str(bad)], base_env(tmp_path), tmp_path, timeout=60)
    assert as_json.returncode == 1
    [entry] = as_json.json()["files"]
    assert [(e["line"], e["segment_id"], e["loop"], e["element"]) for e in entry["errors"]] == [
        (15, "RMR", "2300B", "RMR04"), (23, "SE", "ST", "SE01")]
    assert all(e["file"] == str(bad) and e["reason"] for e in entry["errors"])
    [disc] = entry["discrepancies"]
    assert (disc["kind"], disc["expected_cents"], disc["actual_cents"]) == ("remittance_total_mismatch", 21000, 25500)

    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    run = run_cli(["ingest", "--dry-run", str(unknown)], base_env(tmp_path), tmp_path, timeout=60)
    assert run.returncode == 1 and "not a recognised format" in run.stderr


def test_ingest_publishes_valid_parts_and_strict_publishes_nothing(broker: EmbeddedBroker, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:12]
    defaults = TopicSettings()
    topics = TopicSettings(**{f: f"{getattr(defaults, f)}.{suffix}" for f in TopicSettings.model_fields})
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap, database_url="postgresql:///unused",
                        topics=topics, partitions=4, data_dir=tmp_path)
    ensure_topics(broker.bootstrap, settings)
    env = base_env(tmp_path, LEDGER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, LEDGER_PARTITIONS="4",
                   **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()}, **ledger_keys_env())
    text = (SAMPLES / "820_X218_list_bill_payment.edi").read_text()
    bad = tmp_path / "bad.edi"
    bad.write_text(text.replace("RMR*IG*555777**45", "RMR*IG*555777**4X5"))

    strict = run_cli(["ingest", "--strict", str(bad)], env, tmp_path, timeout=60)
    assert strict.returncode == 1 and "--strict: nothing published" in strict.stdout
    run = run_cli(["ingest", "--json", str(bad)], env, tmp_path, timeout=60)
    assert run.returncode == 1, run.stderr
    report = run.json()
    assert report["published_events"] == 6 and report["records"] == 6

    records = consume_all(broker.bootstrap, topics.payments)
    events = [codec.decode_input(r.value) for r in records]
    assert len(events) == 6, "strict published nothing; the second run published the valid parts"
    assert sum(isinstance(e, PaymentReceived) for e in events) == 5
    assert {r.key for r in records} >= {b"payer:123456789", b"777222"}


def test_ssns_never_reach_the_output_in_text_or_json(tmp_path: Path) -> None:
    from tests.integration.test_ingest import SAMPLE_820_SSNS, SSN_820, SSN_834, ssn_files

    paths = [str(p) for p in ssn_files(tmp_path)]
    bad = tmp_path / "bad-ssn.x12"
    bad.write_text(Path(paths[0]).read_text().replace("INS*Y*18*021*XN", f"INS*Y*18*021*{SSN_834[0]}"))
    paths += [str(bad), str(SAMPLES / "820_X218_list_bill_remittance_only.edi")]
    outputs = ""
    for extra in ([], ["--json"]):
        run = run_cli(["ingest", "--dry-run", *extra, *paths], base_env(tmp_path), tmp_path, timeout=60)
        assert run.returncode == 1, "the file quoting an SSN in INS04 has errors"
        outputs += run.stdout + run.stderr
    assert "[redacted]" in outputs and "ssn-" in outputs
    for ssn in (*SSN_834, *SSN_820, *SAMPLE_820_SSNS):
        assert ssn not in outputs


def test_ack_writes_a_999_per_interchange_that_pyx12_reads_back_with_the_errors_reported(tmp_path: Path) -> None:
    import io

    import pyx12.x12file

    text = (SAMPLES / "820_X218_list_bill_payment.edi").read_text()
    bad = tmp_path / "bad.edi"
    bad.write_text(text.replace("RMR*IG*555777**45", "RMR*IG*555777**4X5"))
    hand = SAMPLES / "handwritten"
    files = [str(bad), str(hand / "834_two_interchanges.txt"), str(hand / "820_advice_bpr01_i_bpr04_non.edi"),
             str(hand / "834_hd05_absent_derivable.txt")]
    acks = tmp_path / "acks"
    run = run_cli(["ingest", "--dry-run", "--json", "--ack", str(acks), *files], base_env(tmp_path), tmp_path,
                  timeout=60)
    assert run.returncode == 1, run.stderr  # the bad file has an error
    report = run.json()
    written = [Path(p).name for p in report["acknowledgments"]]
    assert written == ["bad.edi.000010216.999", "834_two_interchanges.txt.000004008.999",
                       "834_two_interchanges.txt.000005008.999", "820_advice_bpr01_i_bpr04_non.edi.000004001.999",
                       "834_hd05_absent_derivable.txt.000004009.999"]
    [bad_report] = [f for f in report["files"] if f["path"] == str(bad)]
    [error] = bad_report["errors"]

    def read(name: str) -> list[list[str]]:
        reader = pyx12.x12file.X12Reader(io.StringIO((acks / name).read_text()))
        segs = [[s.get_seg_id(), *(e.format() for e in s.elements)] for s in reader]
        assert reader.pop_errors() == []
        return segs

    segs = read("bad.edi.000010216.999")
    assert ["IK3", "RMR", str(error["segment"]), "", "8"] in segs and ["IK4", "4", "", "6"] in segs
    assert ["IK5", "E", "5"] in segs
    for name in written[1:]:
        assert [s for s in read(name) if s[0] == "IK5"] == [["IK5", "A"]] * sum(1 for s in read(name) if s[0] == "AK2")

    plain = run_cli(["ingest", "--dry-run", "--ack", str(acks), files[2]], base_env(tmp_path), tmp_path, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert f"acknowledgment: {acks / written[3]}" in plain.stdout
    assert (acks / ".interchange-control-number").read_text().strip() == "6", "five interchanges, then one more"
