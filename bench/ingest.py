"""Ingest throughput: a synthetic X12 834 parsed and mapped to events, beside pyx12's bare tokenizer.

    python -m bench.ingest --members 50000 [--json]

Prints segments per second of the whole ingest parse (pyx12 loop-aware walk and validation, then the
event mapping) and of pyx12's tokenizer alone (X12Reader, no map), the ceiling. Nothing is published:
this measures the parse, which is the part ingest adds in front of the publisher.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

from events.adapters import IngestLimits, MemberIds, parse_bytes


def synthetic_834(members: int, *, control: int = 1) -> bytes:
    """An 834 (005010X220A1) with ``members`` subscribers, each with one health coverage (7 segments)."""
    seg: list[str] = [
        "ISA*00*          *00*          *ZZ*BENCHAGENCY    *ZZ*BENCHCARRIER   *260401*0900*^*00501*"
        f"{control:09d}*0*T*:",
        f"GS*BE*BENCHAGENCY*BENCHCARRIER*20260401*0900*{control}*X*005010X220A1",
        "ST*834*0001*005010X220A1",
        f"BGN*00*BENCH-{control}*20260401*0900****2",
        "N1*P5*BENCH AGENCY*FI*999999999",
        "N1*IN*BENCH CARRIER*FI*888888888",
    ]
    for i in range(members):
        seg += [
            "INS*Y*18*021*XN*A*C**FT",
            f"REF*0F*M{i:08d}",
            "DTP*356*D8*20260401",
            f"NM1*IL*1*MEMBER*NUMBER{i}****34*{700000000 + i:09d}",
            "DMG*D8*19800101*F",
            f"HD*021**HLT*PLAN-{i % 7}*{('EMP', 'ESP', 'ECH', 'FAM')[i % 4]}",
            "DTP*348*D8*20260401",
        ]
    seg += [f"SE*{len(seg) - 1}*0001", f"GE*1*{control}", f"IEA*1*{control:09d}"]
    return ("~\n".join(seg) + "~\n").encode()


def tokenizer_rate(data: bytes) -> tuple[int, float]:
    import pyx12.x12file

    start = time.perf_counter()
    count = sum(1 for _ in pyx12.x12file.X12Reader(io.StringIO(data.decode())))
    return count, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data = synthetic_834(args.members)
    segments, tok_s = tokenizer_rate(data)
    start = time.perf_counter()
    result = parse_bytes(data, "synthetic.834", MemberIds(b"bench"), IngestLimits(max_members=args.members))
    ingest_s = time.perf_counter() - start
    assert not result.errors, result.errors[:3]
    assert len(result.events) == args.members
    report = {
        "members": args.members,
        "segments": segments,
        "events": len(result.events),
        "ingest_seconds": round(ingest_s, 2),
        "ingest_segments_per_second": round(segments / ingest_s),
        "tokenizer_segments_per_second": round(segments / tok_s),
        "ratio_vs_tokenizer": round((segments / ingest_s) / (segments / tok_s), 3),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:32} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
