"""Entry points: clients of the composition root (processor/app.py), never part of the stream processor."""
