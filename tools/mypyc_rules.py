"""Compile the rules (processor/rules/*.py) with mypyc into build/mypyc-rules/, for processor/compiled.py.

    python tools/mypyc_rules.py          # build unless the build is of these sources already
    python tools/mypyc_rules.py --check  # exit 0 if a fresh build is there, else 1

The sources are not touched and nothing is written beside them; the build goes to a scratch directory
and replaces the previous one at the end, with a manifest of the sources' digest. On any failure
(no C compiler, a construct mypyc refuses) it says so and exits 1: the rules then run as Python.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from processor.compiled import BUILD, MANIFEST, RULES, fresh_build, rule_sources, sources_digest  # noqa: E402


def build() -> dict[str, str]:
    """Compile; returns module name -> extension file (relative to the build directory)."""
    import contextlib
    import io
    import os

    from mypyc.build import mypycify
    from setuptools import Distribution

    with tempfile.TemporaryDirectory(prefix="mypyc-rules-") as tmp:
        scratch = Path(tmp)
        cwd = os.getcwd()
        os.chdir(ROOT)  # module names follow the paths relative to the repository
        try:
            log = io.StringIO()
            with contextlib.redirect_stdout(log):
                extensions = mypycify([str(p.relative_to(ROOT)) for p in rule_sources()], opt_level="3",
                                      target_dir=str(scratch / "c"))
                dist = Distribution({"name": "benefits-ledger-rules", "ext_modules": extensions})
                command = dist.get_command_obj("build_ext")
                command.build_lib = str(scratch / "lib")
                command.build_temp = str(scratch / "temp")
                dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
        lib = scratch / "lib"
        modules = {}
        for so in sorted(lib.rglob("*.so")):
            rel = so.relative_to(lib)
            modules[".".join((*rel.parent.parts, rel.name.split(".", 1)[0]))] = str(rel)
        staged = BUILD.with_name(BUILD.name + ".new")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(lib, staged)
        (staged / MANIFEST).write_text(json.dumps({"digest": sources_digest(), "modules": modules}, indent=1),
                                       encoding="utf-8")
        shutil.rmtree(BUILD, ignore_errors=True)
        staged.rename(BUILD)
    return modules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only say whether a fresh build is there")
    args = parser.parse_args(argv)
    if fresh_build() is not None:
        print(f"mypyc: the rules are compiled ({BUILD.relative_to(ROOT)}, up to date)")
        return 0
    if args.check:
        print("mypyc: no build of the current rules: they run as Python")
        return 1
    start = time.perf_counter()
    try:
        modules = build()
    except (Exception, SystemExit) as exc:  # any failure of the toolchain: the rules stay Python, loudly
        print(f"mypyc: could not compile {RULES.relative_to(ROOT)} ({type(exc).__name__}: {exc}); the rules run"
              " as Python", file=sys.stderr)
        return 1
    print(f"mypyc: compiled {len(modules)} modules in {time.perf_counter() - start:.0f} s into"
          f" {BUILD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
