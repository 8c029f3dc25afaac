"""The processor. Its rules run compiled with mypyc when a build of exactly these sources is there
(processor/compiled.py), else as the plain Python they are."""

from processor.compiled import install as _use_compiled_rules

_use_compiled_rules()
