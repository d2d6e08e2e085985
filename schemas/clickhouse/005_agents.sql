-- ccpipe storage, migration 005: contract section 7 (agents and live staffing).
-- Idempotent: every statement may run again.

-- Handle time: agent seconds on contact and in after-contact work, per (window, channel, queue).
ALTER TABLE metrics_window_partials
    ADD COLUMN IF NOT EXISTS handle_seconds Float64 AFTER frt_business_samples;

-- Window metrics (contract sections 3, 6 and 7.2); a window holding only handle time has a row.
CREATE OR REPLACE VIEW metrics_window AS
SELECT
    window_start,
    window_seconds,
    channel,
    queue,
    started AS conversations_started,
    frt_n AS first_responses,
    if(frt_n > 0, frt_total / frt_n, NULL) AS frt_mean_seconds,
    if(frt_n > 0, arrayMax(frt_all), NULL) AS frt_max_seconds,
    if(frt_n > 0, frt_all[toUInt64(floor(0.5 * (frt_n - 1))) + 1], NULL) AS frt_p50_seconds,
    if(frt_n > 0, frt_all[toUInt64(floor(0.9 * (frt_n - 1))) + 1], NULL) AS frt_p90_seconds,
    if(frt_n > 0, frt_all[toUInt64(floor(0.99 * (frt_n - 1))) + 1], NULL) AS frt_p99_seconds,
    if(frt_n > 0, sla_ok / frt_n, NULL) AS frt_sla_ratio,
    abandons AS abandoned,
    if(abandons + frt_n > 0, abandons / (abandons + frt_n), NULL) AS abandonment_ratio,
    resolutions AS resolved,
    if(resolutions > 0, fcr_n / resolutions, NULL) AS fcr_ratio,
    sentiment_n AS sentiment_samples,
    if(sentiment_n > 0, sentiment_total / sentiment_n, NULL) AS sentiment_mean,
    if(sentiment_n > 0, negative_n / sentiment_n, NULL) AS sentiment_negative_ratio,
    survey_n AS surveys,
    if(csat_answers > 0, csat_total / csat_answers, NULL) AS csat_mean,
    if(csat_answers > 0, csat_good_n / csat_answers, NULL) AS csat_ratio,
    if(nps_answers > 0, 100 * (promoters - detractors) / nps_answers, NULL) AS nps,
    if(ces_answers > 0, ces_total / ces_answers, NULL) AS ces_mean,
    resolution_n AS resolutions_timed,
    if(resolution_n > 0, resolution_total / resolution_n, NULL) AS resolution_mean_seconds,
    if(resolution_n > 0, resolution_all[toUInt64(floor(0.5 * (resolution_n - 1))) + 1], NULL)
        AS resolution_p50_seconds,
    if(resolution_n > 0, resolution_all[toUInt64(floor(0.9 * (resolution_n - 1))) + 1], NULL)
        AS resolution_p90_seconds,
    short_abandons AS abandoned_short,
    if(frt_n + abandons - short_abandons > 0, sla_ok / (frt_n + abandons - short_abandons), NULL)
        AS service_level_ratio,
    if(frt_n > 0, business_total / frt_n, NULL) AS frt_business_mean_seconds,
    if(frt_n > 0, business_all[toUInt64(floor(0.9 * (frt_n - 1))) + 1], NULL) AS frt_business_p90_seconds,
    if(frt_n > 0, business_ok / frt_n, NULL) AS frt_business_sla_ratio,
    round(handle_total, 6) AS handle_seconds,
    is_final AS final
FROM
(
    SELECT
        window_start, window_seconds, channel, queue,
        sum(conversations_started) AS started,
        toUInt64(sum(first_responses)) AS frt_n,
        sum(frt_sum) AS frt_total,
        sum(frt_sla_ok) AS sla_ok,
        arraySort(groupArrayArray(frt_samples)) AS frt_all,
        toInt64(sum(abandoned)) AS abandons,
        sum(resolved) AS resolutions,
        sum(fcr_ok) AS fcr_n,
        sum(sentiment_samples) AS sentiment_n,
        sum(sentiment_sum) AS sentiment_total,
        sum(sentiment_negative) AS negative_n,
        sum(surveys) AS survey_n,
        sum(csat_n) AS csat_answers,
        sum(csat_sum) AS csat_total,
        sum(csat_good) AS csat_good_n,
        sum(nps_n) AS nps_answers,
        sum(nps_promoters) AS promoters,
        sum(nps_detractors) AS detractors,
        sum(ces_n) AS ces_answers,
        sum(ces_sum) AS ces_total,
        toUInt64(sum(resolutions_timed)) AS resolution_n,
        sum(resolution_sum) AS resolution_total,
        arraySort(groupArrayArray(resolution_samples)) AS resolution_all,
        toInt64(sum(abandoned_short)) AS short_abandons,
        sum(frt_business_sum) AS business_total,
        sum(frt_business_sla_ok) AS business_ok,
        arraySort(groupArrayArray(frt_business_samples)) AS business_all,
        sum(handle_seconds) AS handle_total,
        min(final) AS is_final
    FROM
    (
        SELECT *
        FROM metrics_window_partials
        ORDER BY version DESC, updated_at DESC
        LIMIT 1 BY window_start, window_seconds, channel, queue, source_partition
    )
    GROUP BY window_start, window_seconds, channel, queue
    HAVING started + frt_n + abandons + resolutions + sentiment_n + survey_n > 0 OR round(handle_total, 6) > 0
);

-- Agent time per (window, queue) and input partition; the `agent_window` view merges them into
-- the contract's rows (section 7.2). The highest version of a (window, queue, partition) wins.
CREATE TABLE IF NOT EXISTS agent_window_partials
(
    window_start               DateTime64(3, 'UTC'),
    window_seconds             Float64,
    queue                      LowCardinality(String),
    source_partition           UInt16,
    available_seconds          Float64,
    on_contact_seconds         Float64,
    after_contact_work_seconds Float64,
    away_seconds               Float64,
    final                      Bool,
    version                    UInt64,
    updated_at                 DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, window_seconds, queue, source_partition)
TTL toDateTime(window_start) + INTERVAL {ttl_days} DAY;

-- Agent windows (contract section 7.2): seconds by state, staffed, occupancy.
CREATE OR REPLACE VIEW agent_window AS
SELECT
    window_start,
    window_seconds,
    queue,
    available AS available_seconds,
    on_contact AS on_contact_seconds,
    wrap_up AS after_contact_work_seconds,
    away AS away_seconds,
    round(available + on_contact + wrap_up, 6) AS staffed_seconds,
    if(staffed_seconds > 0, round(on_contact + wrap_up, 6) / staffed_seconds, NULL) AS occupancy_ratio,
    is_final AS final
FROM
(
    SELECT
        window_start, window_seconds, queue,
        round(sum(available_seconds), 6) AS available,
        round(sum(on_contact_seconds), 6) AS on_contact,
        round(sum(after_contact_work_seconds), 6) AS wrap_up,
        round(sum(away_seconds), 6) AS away,
        min(final) AS is_final
    FROM
    (
        SELECT *
        FROM agent_window_partials
        ORDER BY version DESC, updated_at DESC
        LIMIT 1 BY window_start, window_seconds, queue, source_partition
    )
    GROUP BY window_start, window_seconds, queue
    HAVING available + on_contact + wrap_up + away > 0
);

-- The interval report (contract section 7.5): per local interval of `minutes` (15, 30 or 60) in
-- the IANA zone `tz`, channel and queue, sums of the tumbling windows whose start lies in the
-- interval (never an average of averages), and the occupancy of the queue's agents. Local
-- intervals start on the local hour (and its quarters and halves), so DST days and zones with
-- half-hour offsets get the intervals their clocks show:
--   SELECT * FROM interval_report(minutes = 30, tz = 'America/New_York')
CREATE OR REPLACE VIEW interval_report AS
SELECT
    m.interval_start AS interval_start,
    m.channel AS channel,
    m.queue AS queue,
    m.offered AS offered,
    m.answered AS answered,
    m.abandoned AS abandoned,
    m.abandoned_short AS abandoned_short,
    if(m.answered + m.abandoned - m.abandoned_short > 0,
       m.sla_ok / (m.answered + m.abandoned - m.abandoned_short), NULL) AS service_level_ratio,
    if(m.answered > 0, m.frt_total / m.answered, NULL) AS asa_seconds,
    if(m.answered > 0 AND m.handle > 0, m.handle / m.answered, NULL) AS aht_seconds,
    if(m.resolutions > 0, m.fcr_n / m.resolutions, NULL) AS fcr_ratio,
    if(m.csat_answers > 0, m.csat_total / m.csat_answers, NULL) AS csat_mean,
    if(a.staffed > 0, a.busy / a.staffed, NULL) AS occupancy_ratio
FROM
(
    SELECT
        toStartOfHour(toTimeZone(window_start, {tz:String}))
            + toIntervalMinute(intDiv(toMinute(toTimeZone(window_start, {tz:String})), {minutes:UInt32})
                               * {minutes:UInt32}) AS interval_start,
        channel,
        queue,
        toInt64(sum(conversations_started)) AS offered,
        toInt64(sum(first_responses)) AS answered,
        toInt64(sum(abandoned)) AS abandoned,
        toInt64(sum(abandoned_short)) AS abandoned_short,
        sum(frt_sla_ok) AS sla_ok,
        sum(frt_sum) AS frt_total,
        round(sum(handle_seconds), 6) AS handle,
        sum(resolved) AS resolutions,
        sum(fcr_ok) AS fcr_n,
        sum(csat_n) AS csat_answers,
        sum(csat_sum) AS csat_total
    FROM
    (
        SELECT *
        FROM metrics_window_partials
        ORDER BY version DESC, updated_at DESC
        LIMIT 1 BY window_start, window_seconds, channel, queue, source_partition
    )
    WHERE {minutes:UInt32} IN (15, 30, 60)
    GROUP BY interval_start, channel, queue
) AS m
LEFT JOIN
(
    SELECT
        toStartOfHour(toTimeZone(window_start, {tz:String}))
            + toIntervalMinute(intDiv(toMinute(toTimeZone(window_start, {tz:String})), {minutes:UInt32})
                               * {minutes:UInt32}) AS interval_start,
        queue,
        round(sum(on_contact_seconds + after_contact_work_seconds), 6) AS busy,
        round(sum(available_seconds + on_contact_seconds + after_contact_work_seconds), 6) AS staffed
    FROM
    (
        SELECT *
        FROM agent_window_partials
        ORDER BY version DESC, updated_at DESC
        LIMIT 1 BY window_start, window_seconds, queue, source_partition
    )
    GROUP BY interval_start, queue
) AS a ON a.interval_start = m.interval_start AND a.queue = m.queue
ORDER BY interval_start, channel, queue;
