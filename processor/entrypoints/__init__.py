"""Entry points of the ledger (the web workbench); clients of the composition root, processor/app.py."""
