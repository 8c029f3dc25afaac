"""History: the archive reader, as-of replay on both time axes, verification, rebuild and statements.

- ``replay.archive``: streams the archive in applied order (seq) with COPY; optionally each partition's
  prefix up to the last event recorded at or before R, or one account and its partition's broadcasts.
- ``replay.fold``: folds it with the processor's own fold (processor.rules.fold.fold_event);
  ``replay.parallel`` splits the fold by partition over processes reading one exported snapshot.
- ``replay.verify``: replay of everything against the live projection tables, row by row.
- ``replay.statements`` / ``replay.render``: statements, open discrepancies and aging as of (E, R), as a
  table, JSON, CSV or one self-contained HTML file (inline SVG charts).
- ``replay.rebuild``: projections afresh in a new schema, verified, switched in atomically.
- ``projections.chain``: the per-partition hash chain that ``verify-archive`` recomputes.

Both time axes, from the command line (R = recorded time, what the ledger knew; E = effective date,
which coverage months are reported)::

    benefits-ledger replay --known-at 2026-03-31 --account M07000417
        # the books as they stood at the end of 31 March (plan time zone): a payment recorded on
        # 1 April is not seen, nor a discrepancy it resolved
    benefits-ledger replay --through 2026-02 --payer AG-004 --format csv --out ag004.csv
        # everything known now, about coverage months up to February only
    benefits-ledger replay --known-at "2026-03-31T17:00-07:00" --through 2026-01-31 --json
    benefits-ledger replay --known-at 2026-06-30 --format html --out june.html
    benefits-ledger replay --verify --json      # replay of everything == live tables (--workers 2)
    benefits-ledger verify-archive --json       # {"events_checked": N, "first_broken": null}
    benefits-ledger rebuild [--no-switch]
"""
