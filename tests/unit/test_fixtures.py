"""The third-party X12 samples in tests/fixtures are the files their sources published, byte for byte."""

from __future__ import annotations

import hashlib

from tests.fixtures import X12_SAMPLES


def test_x12_samples_match_their_recorded_checksums_and_carry_their_licences() -> None:
    listed = {}
    for line in (X12_SAMPLES / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        listed[name] = digest
    samples = sorted(p.name for p in X12_SAMPLES.iterdir() if p.suffix in (".txt", ".edi"))
    assert samples == sorted(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((X12_SAMPLES / name).read_bytes()).hexdigest() == digest, name
    assert sorted(p.name for p in (X12_SAMPLES / "LICENSES").iterdir()) == ["hcc-MIT.txt", "pyx12-BSD-3-Clause.txt"]
