"""Create the topics a worker needs, when they do not exist yet."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from pipeline.settings import WorkerSettings
from pipeline.stream.kafka import aiokafka_options  # kafka-python takes the same names


def ensure_topics(settings: WorkerSettings) -> int:
    """Create missing topics; checkpoint topics get the input's partition count. Returns it."""
    admin = KafkaAdminClient(**aiokafka_options(settings), client_id="ccpipe-admin")
    try:
        existing = set(admin.list_topics())
        partitions = settings.partitions
        if settings.input_topic in existing:
            (described,) = admin.describe_topics([settings.input_topic])
            partitions = len(described["partitions"]) or partitions
        checkpoints = settings.checkpoint_topic
        wanted = [settings.input_topic, settings.dlq_topic, checkpoints, f"{checkpoints}.data"]
        wanted.append(settings.partials_topic)
        missing = [
            NewTopic(name, partitions, settings.replication_factor) for name in wanted if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was faster
                admin.create_topics(missing)
        return partitions
    finally:
        admin.close()
