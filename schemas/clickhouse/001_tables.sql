-- ccpipe storage, migration 001: the four tables.
-- Idempotent: every statement may run again. {ttl_days} is CCPIPE_STORE_TTL_DAYS.
-- Rows are written at least once; ReplacingMergeTree plus the views of 002 make a replayed
-- batch or a restarted worker invisible to queries (see docs/storage.md).

-- Every valid event: parsed fields plus the raw JSON. A re-written event has the same sorting
-- key and collapses; `interactions_dedup` hides copies not yet merged.
CREATE TABLE IF NOT EXISTS interactions
(
    event_id         String,
    type             LowCardinality(String),
    conversation_id  String,
    customer_id      String,
    channel          LowCardinality(String),
    queue            LowCardinality(String),
    event_time       DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    direction        LowCardinality(Nullable(String)),
    author           LowCardinality(Nullable(String)),
    agent_id         Nullable(String),
    text             Nullable(String) CODEC(ZSTD(3)),
    sentiment        Nullable(Float32),
    csat             Nullable(UInt8),
    nps              Nullable(UInt8),
    ces              Nullable(UInt8),
    raw              String CODEC(ZSTD(3)),
    source_partition UInt16,
    source_offset    UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (channel, toStartOfHour(event_time), event_id)
TTL toDateTime(event_time) + INTERVAL {ttl_days} DAY;

-- Conversation facts (contract section 2), one row per change; the highest version wins.
-- version = the input offset of the batch that produced it (a conversation lives on one partition).
CREATE TABLE IF NOT EXISTS conversations
(
    conversation_id   String,
    customer_id       String,
    channel           LowCardinality(String),
    queue             LowCardinality(String),
    started_at        Nullable(DateTime64(3, 'UTC')),
    first_response_at Nullable(DateTime64(3, 'UTC')),
    frt_seconds       Nullable(Float64),
    first_agent_id    Nullable(String),
    messages_inbound  UInt32,
    messages_outbound UInt32,
    abandoned         Bool,
    resolved_at       Nullable(DateTime64(3, 'UTC')),
    reopened          Bool,
    repeat_contact    Bool,
    fcr               Bool,
    fcr_final         Bool,
    sentiment_mean    Nullable(Float64),
    sentiment_first   Nullable(Float64),
    sentiment_last    Nullable(Float64),
    csat              Nullable(UInt8),
    nps               Nullable(UInt8),
    ces               Nullable(UInt8),
    version           UInt64,
    updated_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ifNull(started_at, toDateTime64(0, 3, 'UTC')))
ORDER BY conversation_id
TTL toDateTime(updated_at) + INTERVAL {ttl_days} DAY;

-- Window accumulators per input partition (one engine per partition); the `metrics_window`
-- view merges them exactly into contract section 3 rows. The highest version of a
-- (window, key, partition) wins, so later corrections replace earlier ones.
CREATE TABLE IF NOT EXISTS metrics_window_partials
(
    window_start          DateTime64(3, 'UTC'),
    window_seconds        Float64,
    channel               LowCardinality(String),
    queue                 LowCardinality(String),
    source_partition      UInt16,
    conversations_started UInt32,
    first_responses       UInt32,
    frt_sum               Float64,
    frt_sla_ok            UInt32,
    frt_samples           Array(Float64),
    abandoned             UInt32,
    resolved              UInt32,
    fcr_ok                UInt32,
    sentiment_samples     UInt32,
    sentiment_sum         Float64,
    sentiment_negative    UInt32,
    surveys               UInt32,
    csat_n                UInt32,
    csat_sum              UInt32,
    csat_good             UInt32,
    nps_n                 UInt32,
    nps_promoters         UInt32,
    nps_detractors        UInt32,
    ces_n                 UInt32,
    ces_sum               UInt32,
    final                 Bool,
    version               UInt64,
    updated_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, window_seconds, channel, queue, source_partition)
TTL toDateTime(window_start) + INTERVAL {ttl_days} DAY;

-- Refused input, with why and where: invalid events and rows ClickHouse rejected.
CREATE TABLE IF NOT EXISTS dead_letters
(
    topic       LowCardinality(String),
    partition   UInt16,
    offset      Int64,
    reason      LowCardinality(String),
    detail      String,
    payload     String CODEC(ZSTD(3)),
    received_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset, reason)
TTL toDateTime(received_at) + INTERVAL {ttl_days} DAY;
