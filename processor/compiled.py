"""The rules compiled with mypyc, used only when a build of exactly these sources is there.

``tools/mypyc_rules.py`` (``make test`` and ``make bench`` run it) compiles ``processor/rules/*.py``, the
plain typed Python they stay, into ``build/mypyc-rules/`` with a manifest of the sources' digest. At
import of ``processor``, ``install()`` puts a finder first on ``sys.meta_path`` that loads those
extension modules, but only when the manifest's digest is that of the sources as they are now and was
built for this interpreter: an edited rule is never shadowed by a stale build, it runs as Python until
the next build. ``LEDGER_COMPILED_RULES=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

RULES = Path(__file__).resolve().parent / "rules"
BUILD = Path(__file__).resolve().parent.parent / "build" / "mypyc-rules"
MANIFEST = "manifest.json"


def rule_sources(rules: Path = RULES) -> list[Path]:
    """The modules compiled: every rule module but the package's ``__init__``."""
    return sorted(p for p in rules.glob("*.py") if p.name != "__init__.py")


def sources_digest(rules: Path = RULES) -> str:
    """sha256 over the rule modules' names and contents, and the interpreter's extension suffix."""
    h = hashlib.sha256(importlib.machinery.EXTENSION_SUFFIXES[0].encode())
    for path in rule_sources(rules):
        h.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


class _Finder:
    """Finds the compiled modules of one build (by full module name) and nothing else."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        file = self.files.get(name)
        return None if file is None else importlib.util.spec_from_file_location(name, file)


def fresh_build(build: Path = BUILD, rules: Path = RULES) -> dict[str, Path] | None:
    """The build's modules (name -> extension file) if it was made from the sources as they are now."""
    try:
        manifest = json.loads((build / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("digest") != sources_digest(rules):
        return None
    files = {str(name): build / str(rel) for name, rel in dict(manifest.get("modules", {})).items()}
    if not files or not all(f.is_file() for f in files.values()):
        return None
    return files


def install(build: Path = BUILD, rules: Path = RULES) -> bool:
    """Use the compiled rules when a fresh build is there (and not turned off); True if they are used."""
    if os.environ.get("LEDGER_COMPILED_RULES", "1") == "0" or any(isinstance(f, _Finder) for f in sys.meta_path):
        return False
    files = fresh_build(build, rules)
    if files is None or any(name in sys.modules for name in files):
        return False  # nothing built for these sources, or the Python modules are already loaded
    sys.meta_path.insert(0, _Finder(files))
    return True


def active() -> bool:
    """Are the rules running compiled?"""
    module = sys.modules.get("processor.rules.fold")
    return module is not None and not str(getattr(module, "__file__", "")).endswith(".py")
