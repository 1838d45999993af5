"""Kafka connectors: the source, offsets, the acknowledged publisher, the embedded test broker.

``RECONNECT`` is the reconnect policy of every long-lived client of a job. kafka-python backs off
up to 30 s between reconnect attempts (the Java client: 1 s). Publishing in a loop through six
8-second broker outages, the longest pause between acknowledged batches was 32 s with that
default and 9.1 s with a 1 s cap.
"""
RECONNECT: dict[str, int] = {"reconnect_backoff_max_ms": 1000}
