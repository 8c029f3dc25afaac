"""Publishes a benchmark program from its own process, as an upstream system would.

Usage: python -m bench._publish_worker BOOTSTRAP TOPIC_SUFFIX PARTITIONS N_EVENTS SEED
Prints the number of records sent.
"""

from __future__ import annotations

import sys

from bench._pipeline import program_events, topic_settings
from events.publisher import Publisher


def main(argv: list[str]) -> int:
    bootstrap, suffix, partitions, n_events, seed = argv
    events = program_events(int(n_events), int(seed))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # go
    with Publisher(bootstrap, topic_settings(suffix), int(partitions)) as publisher:
        publisher.publish(events)
    sys.stdout.write(f"{publisher.records_sent}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
