"""Which input partition an event belongs to, whatever partitioner its producer used.

Every event of a customer (and, for agent events, of an agent) must meet the same engine
state, so each has one home partition: Kafka's default partitioner (murmur2 of the key, as the
Java client, kafka-python and aiokafka place a keyed record) applied to its routing key. A
record found elsewhere — keyless, keyed by something else, or placed by another partitioner
(librdkafka's default is CRC32) — is sent to its home partition once and skipped where it
landed, so results never depend on how it was produced.
"""

from __future__ import annotations

from functools import lru_cache

from kafka.partitioner import murmur2

# Set on a record that ccpipe itself sent to its home partition: it is processed where it is
# (a guard against a loop should the partition count change under a running worker).
REROUTED_HEADER = "ccpipe-rekeyed"


@lru_cache(maxsize=1 << 16)
def home_partition(key: str, partitions: int) -> int:
    """Kafka's default placement of a record keyed by `key` in a topic of `partitions`."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
