"""The ledger's rules, by domain, and the one fold that applies them. Pure: no I/O, clock or logging.

Modules, bottom up: ``base`` (Outcome, Rejected, Finding, ids), ``dates``; ``coverage``, ``pricing``,
``cobra``, ``s125``; ``lifecycle`` (discrepancy events); ``billing``, ``payments``, ``refunds``,
``retro``, ``days``, ``fsa``, ``enrollment``; ``reconcile`` (project a month, run the finders, settle);
``fold`` (the table from event type to handler, and ``fold_event``).
"""
