"""The demo is a client of the composition root with its own model of the rules: it never imports the
ledger's rules, so its oracle cannot agree with the fold by construction."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import processor.entrypoints.demo as demo

PACKAGE = Path(demo.__file__).parent
RULES = ("processor.fold", "processor.fsa", "processor.tax", "processor.rules", "processor.state")
# what the demo may import of the project: the event language, the plan settings, the composition root
ALLOWED = ("events", "processor.settings", "processor.app", "processor.kafka_clients", "processor.entrypoints.demo")
FIRST_PARTY = ("events", "processor", "projections", "replay", "bench", "tests")


def imported(path: Path) -> set[str]:
    """Every module a file imports, ``from a import b`` counted as both ``a`` and ``a.b``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import hides what it reaches"
            assert node.module is not None
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_demo_package_never_imports_the_ledgers_rules() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert {f.name for f in files} >= {"program.py", "injections.py", "fsa.py", "model.py", "oracle.py", "run.py"}
    for f in files:
        names = imported(f)
        assert not [n for n in names if within(n, RULES)], f"{f.name} imports the ledger's rules"
        project = {n for n in names if within(n, FIRST_PARTY) and not within(n, ALLOWED)}
        # processor.app.x: names of the composition root; events.x.y: the event language
        assert not project, f"{f.name} imports {sorted(project)}: only {ALLOWED} are the demo's to use"


def test_the_walk_sees_an_import_of_the_rules(tmp_path: Path) -> None:
    """The check above is not vacuous: it sees each way of writing an import of a rule module."""
    probe = tmp_path / "probe.py"
    for source in ("import processor.fold", "from processor import fsa", "from processor.rules.retro import x",
                   "from processor.state import MonthState", "def f():\n    import processor.tax"):
        probe.write_text(source + "\n")
        assert [n for n in imported(probe) if within(n, RULES)], source


def test_generating_and_judging_a_program_loads_none_of_the_ledger() -> None:
    """Transitively too: the generator, the model and the oracle run without the processor's modules."""
    code = (
        "import sys\n"
        "from processor.entrypoints.demo import expected_books, generate\n"
        "books = expected_books(generate(members=30, months=4, seed=1))\n"
        "assert books.months and books.rows\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('processor', 'projections', 'replay')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parents[2]).stdout.split()
    # processor.compiled: the package's loader of a mypyc build of the rules (it imports no rule);
    # processor.settings_*: the sections of the settings, which processor.settings gathers
    assert out and all(within(m, ("processor.entrypoints", "processor.settings"))
                       or m in ("processor", "processor.compiled", "processor.settings_plan", "processor.settings_fsa",
                                "processor.settings_services") for m in out), out


def test_the_demo_command_takes_the_proration_of_its_run() -> None:
    from processor.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["demo"]).proration is None  # the plan's (LEDGER_PLAN__PRORATION), whole_month by default
    assert parser.parse_args(["demo", "--proration", "daily"]).proration == "daily"
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["demo", "--proration", "hourly"])
    assert exit_.value.code == 2
