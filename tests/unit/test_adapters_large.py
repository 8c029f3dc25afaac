"""Large X12 files: chunks validated in parallel give what one pass gives; 50,000 members within 60 s."""

from __future__ import annotations

from bench.ingest import synthetic_834
from events.adapters import MemberIds, parse_bytes
from events.adapters.x12 import read_x12, read_x12_parallel
from tests.fixtures import X12_SAMPLES


def _with_errors(members: int) -> str:
    lines = synthetic_834(members).decode().split("~\n")
    middle = 7 * (members // 2) + 6
    assert lines[middle].startswith("INS*Y*18*021")
    lines[middle] = lines[middle].replace("INS*Y*18*021", "INS*Y*18*099")
    lines[middle + 5] = lines[middle + 5].replace("HD*021", "HD*0X1")
    se = next(i for i, line in enumerate(lines) if line.startswith("SE*"))
    lines[se] = "SE*5*0001"
    return "~\n".join(lines)


def test_parallel_chunks_find_the_same_segments_and_errors_as_one_pass() -> None:
    text = _with_errors(400)
    serial_segs, serial_errors = read_x12(text, "big.834")
    segs, errors = read_x12_parallel(text, "big.834", 2)
    assert segs == serial_segs
    assert [(e.line, e.segment_id, e.element, e.reason) for e in errors] == [
        (e.line, e.segment_id, e.element, e.reason) for e in serial_errors]
    assert [(e.line, e.segment_id, e.element) for e in errors] == [
        (1407, "INS", "INS03"), (1412, "HD", None), (1413, "DTP", None), (2807, "SE", "SE01")]


# The 50,000-member timing is bench/ingest.py's job (never a timed assertion in the tests).


# -- robustness: mutated files never crash the parser ---------------------------------------------


from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from events import codec  # noqa: E402

_SAMPLES = X12_SAMPLES
_TEXTS = [p.read_bytes() for p in sorted(_SAMPLES.iterdir()) if p.suffix in (".txt", ".edi")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(_TEXTS) - 1), at=st.floats(0, 1), cut=st.integers(0, 40),
       insert=st.binary(max_size=12))
@example(which=2, at=0.1328125, cut=0, insert=b"\x00")  # pyx12 raised IndexError on this one
def test_a_mutated_x12_file_gives_errors_never_an_exception(which: int, at: float, cut: int, insert: bytes) -> None:
    data = _TEXTS[which]
    i = int(at * len(data))
    mutated = data[:i] + insert + data[i + cut:]
    result = parse_bytes(mutated, "m.x12", MemberIds(b"k"))
    for event in result.events:
        assert codec.decode_input(codec.encode(event)) == event
    for error in result.errors:
        assert error.reason and error.file == "m.x12"


_CSV = (b"event_id,account_id,effective_on,occurred_at,payment_id,coverage_month,amount_cents,method,payer_id\n"
        b"p-1,M1,2026-01-05,2026-01-05T10:00:00Z,P1,2026-01-01,78412,ach,AG-1\n")


@settings(max_examples=80, deadline=None)
@given(which=st.sampled_from(["csv", "jsonl"]), at=st.floats(0, 1), cut=st.integers(0, 10),
       insert=st.binary(max_size=8))
def test_mutated_csv_and_json_lines_give_errors_never_an_exception(which: str, at: float, cut: int,
                                                                   insert: bytes) -> None:
    from tests.unit.builders import pay

    data = _CSV if which == "csv" else codec.encode(pay(100)) + b"\n"
    i = int(at * len(data))
    result = parse_bytes(data[:i] + insert + data[i + cut:], "m", MemberIds(b"k"))
    for event in result.events:
        assert codec.decode_input(codec.encode(event)) == event


def test_a_record_with_invalid_utf8_in_a_key_is_dead_lettered_not_a_crash() -> None:
    from tests.unit.builders import Feed, make, pay, run

    proc, store = make()
    event = pay(100)
    raw = codec.encode(event).replace(b'{"type"', b'{"\x80type"')
    result = run(proc, store, [Feed().record(event, value=raw)])
    assert len(result.write.dead_letters) == 1
