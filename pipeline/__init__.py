"""ccpipe: real-time contact-center metrics (FRT, FCR, sentiment) from Kafka to ClickHouse and Prometheus."""

__version__ = "0.1.0"

from pipeline import native  # the hot path's modules are chosen before any of them loads

native.choose()
