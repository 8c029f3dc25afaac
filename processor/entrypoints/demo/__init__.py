"""The demo: a realistic synthetic benefits program with known injected errors, published to the ledger
through the composition root and checked to the cent against the demo's own model of the rules.

program.py generates it (members, coverage, rates, bills, payments), injections.py places each error,
fsa.py the flexible spending accounts, model.py is the independent model of the rules, oracle.py the
expected amounts and the comparison, run.py runs it on a live stack and reads the books back. Nothing
here imports the ledger's rules (processor/rules, fold, fsa, tax, state); the generator, the model and
the oracle load none of the ledger at all (run.py, which needs the composition root, is imported on
first use of its names).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from processor.entrypoints.demo.oracle import ExpectedBooks, Judgement, expected_books, judge
from processor.entrypoints.demo.program import generate
from processor.entrypoints.demo.records import (
    CLAIM_DECISIONS,
    INJECTED_KINDS,
    ExpectedClaim,
    Program,
    ProgramTooSmall,
)

if TYPE_CHECKING:
    from processor.entrypoints.demo.run import DEMO_DATABASE, DemoReport, read_claims, run_demo, run_program

_RUN = ("DEMO_DATABASE", "DemoReport", "read_claims", "run_demo", "run_program")

__all__ = [
    "CLAIM_DECISIONS",
    "DEMO_DATABASE",
    "INJECTED_KINDS",
    "DemoReport",
    "ExpectedBooks",
    "ExpectedClaim",
    "Judgement",
    "Program",
    "ProgramTooSmall",
    "expected_books",
    "generate",
    "judge",
    "read_claims",
    "run_demo",
    "run_program",
]


def __getattr__(name: str) -> Any:
    if name in _RUN:
        return getattr(importlib.import_module("processor.entrypoints.demo.run"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
