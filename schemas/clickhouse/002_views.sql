-- ccpipe storage, migration 002: views that resolve versions and duplicates, for analysts.

-- Every valid event once.
CREATE VIEW IF NOT EXISTS interactions_dedup AS
SELECT * EXCEPT (ingested_at)
FROM interactions
ORDER BY ingested_at DESC
LIMIT 1 BY event_id;

-- The latest facts of every conversation (contract section 2 fields).
CREATE VIEW IF NOT EXISTS conversations_latest AS
SELECT * EXCEPT (version, updated_at)
FROM conversations
ORDER BY version DESC, updated_at DESC
LIMIT 1 BY conversation_id;

-- Window metrics (contract section 3), merged exactly across input partitions: counts and
-- sums add, FRT quantiles come from the union of the partitions' samples (exact, the sample
-- at 0-based rank floor(p*(n-1))).
CREATE VIEW IF NOT EXISTS metrics_window AS
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
        sum(abandoned) AS abandons,
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
        min(final) AS is_final
    FROM
    (
        SELECT *
        FROM metrics_window_partials
        ORDER BY version DESC, updated_at DESC
        LIMIT 1 BY window_start, window_seconds, channel, queue, source_partition
    )
    GROUP BY window_start, window_seconds, channel, queue
    HAVING started + frt_n + abandons + resolutions + sentiment_n + survey_n > 0
);

-- First response time by hour of the first response, channel and queue.
CREATE VIEW IF NOT EXISTS frt_hourly AS
SELECT
    toStartOfHour(first_response_at) AS hour,
    channel,
    queue,
    count() AS first_responses,
    avg(frt_seconds) AS frt_mean_seconds,
    quantileExactLow(0.5)(frt_seconds) AS frt_p50_seconds,
    quantileExactLow(0.9)(frt_seconds) AS frt_p90_seconds,
    max(frt_seconds) AS frt_max_seconds
FROM conversations_latest
WHERE frt_seconds IS NOT NULL
GROUP BY hour, channel, queue;

-- First-contact resolution (final view) by day of resolution.
CREATE VIEW IF NOT EXISTS fcr_daily AS
SELECT
    toDate(resolved_at) AS day,
    channel,
    queue,
    count() AS resolved,
    countIf(fcr) AS first_contact_resolved,
    countIf(fcr) / count() AS fcr_ratio,
    countIf(fcr_final) / count() AS final_share,
    countIf(reopened) AS reopened,
    countIf(repeat_contact) AS repeat_contacts
FROM conversations_latest
WHERE resolved_at IS NOT NULL
GROUP BY day, channel, queue;

-- Customer sentiment by day: inbound customer messages with a score.
CREATE VIEW IF NOT EXISTS sentiment_daily AS
SELECT
    toDate(event_time) AS day,
    channel,
    queue,
    count() AS messages,
    avg(sentiment) AS sentiment_mean,
    countIf(sentiment <= -0.05) / count() AS negative_ratio
FROM interactions_dedup
WHERE type = 'message' AND direction = 'inbound' AND author = 'customer' AND sentiment IS NOT NULL
GROUP BY day, channel, queue;

-- Agents by day of their first responses: workload, speed, outcome, satisfaction.
CREATE VIEW IF NOT EXISTS agent_daily AS
SELECT
    toDate(first_response_at) AS day,
    first_agent_id AS agent_id,
    count() AS conversations,
    avg(frt_seconds) AS frt_mean_seconds,
    quantileExactLow(0.9)(frt_seconds) AS frt_p90_seconds,
    countIf(resolved_at IS NOT NULL) AS resolved,
    countIf(fcr) / nullIf(countIf(resolved_at IS NOT NULL), 0) AS fcr_ratio,
    avg(csat) AS csat_mean
FROM conversations_latest
WHERE first_agent_id IS NOT NULL
GROUP BY day, agent_id;
