"""The rules compiled with mypyc (processor/compiled.py, tools/mypyc_rules.py): a build is used only for
the sources it was made from, and the compiled rules keep the same books as the Python ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from processor.compiled import BUILD, MANIFEST, RULES, fresh_build, install, sources_digest

REPO = Path(__file__).resolve().parents[2]


def fake_build(tmp: Path, rules: Path) -> Path:
    build = tmp / "build"
    build.parent.mkdir(parents=True, exist_ok=True)
    (build / "processor" / "rules").mkdir(parents=True)
    so = build / "processor" / "rules" / "fold.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"not really")
    (build / MANIFEST).write_text(json.dumps({"digest": sources_digest(rules), "modules": {
        "processor.rules.fold": str(so.relative_to(build))}}))
    return build


def test_a_build_is_used_only_for_the_sources_it_was_made_from(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    build = fake_build(tmp_path, rules)
    so = build / "processor/rules/fold.cpython-311-x86_64-linux-gnu.so"
    assert fresh_build(build, rules) == {"processor.rules.fold": so}
    (rules / "dates.py").write_text((rules / "dates.py").read_text() + "\n# an edit\n")
    assert fresh_build(build, rules) is None  # an edited rule runs as Python, never as the stale build
    assert fresh_build(tmp_path / "nothing", rules) is None
    # a fresh build, but its module already runs as Python: not swapped under its callers
    import processor.rules.fold  # noqa: F401

    again = fake_build(tmp_path / "again", rules)
    assert fresh_build(again, rules) is not None and install(again, rules) is False


def _books_digest(compiled: bool) -> str:
    script = (
        "import hashlib, processor.compiled as c\n"
        "from processor.entrypoints.demo import generate\n"
        "from processor.rules.base import Rejected\n"
        "from processor.state import encode_state\n"
        "from tests.unit.builders import Ledger\n"
        "led = Ledger()\n"
        "for _, events in generate(members=40, months=6, seed=5).phases:\n"
        "    for e in events:\n"
        "        try:\n"
        "            led.apply(e)\n"
        "        except Rejected:\n"
        "            pass\n"
        "h = hashlib.sha256(encode_state(led.part))\n"
        "for a in sorted(led.accounts): h.update(encode_state(led.accounts[a]))\n"
        "print(c.active(), h.hexdigest())\n"
    )
    env = {**os.environ, "LEDGER_COMPILED_RULES": "1" if compiled else "0", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    assert out[0] == str(compiled)
    return out[1]


@pytest.mark.skipif(fresh_build() is None, reason=f"no mypyc build of these rules in {BUILD} (make test builds it)")
def test_the_compiled_rules_keep_the_same_books_as_the_python_ones() -> None:
    assert _books_digest(compiled=True) == _books_digest(compiled=False)
