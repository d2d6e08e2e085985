-- ccpipe storage, migration 003: contract section 6 (resolution time, service level with short
-- abandons, business-hours FRT) and the analyst views that use them.
-- Idempotent: every statement may run again.

ALTER TABLE conversations
    ADD COLUMN IF NOT EXISTS resolution_seconds Nullable(Float64) AFTER ces,
    ADD COLUMN IF NOT EXISTS frt_business_seconds Nullable(Float64) AFTER resolution_seconds;

ALTER TABLE metrics_window_partials
    ADD COLUMN IF NOT EXISTS resolutions_timed UInt32 AFTER ces_sum,
    ADD COLUMN IF NOT EXISTS resolution_sum Float64 AFTER resolutions_timed,
    ADD COLUMN IF NOT EXISTS resolution_samples Array(Float64) AFTER resolution_sum,
    ADD COLUMN IF NOT EXISTS abandoned_short UInt32 AFTER resolution_samples,
    ADD COLUMN IF NOT EXISTS frt_business_sum Float64 AFTER abandoned_short,
    ADD COLUMN IF NOT EXISTS frt_business_sla_ok UInt32 AFTER frt_business_sum,
    ADD COLUMN IF NOT EXISTS frt_business_samples Array(Float64) AFTER frt_business_sla_ok;

-- conversations_latest selects `*`: created again, so its column list surely holds the new ones.
CREATE OR REPLACE VIEW conversations_latest AS
SELECT * EXCEPT (version, updated_at)
FROM conversations
ORDER BY version DESC, updated_at DESC
LIMIT 1 BY conversation_id;

-- Window metrics (contract sections 3 and 6), merged exactly across input partitions: counts and
-- sums add, quantiles come from the union of the partitions' samples (exact, the sample at
-- 0-based rank floor(p*(n-1))).
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

-- First response time by hour of the first response, channel and queue, in calendar time and in
-- the queue's business hours.
CREATE OR REPLACE VIEW frt_hourly AS
SELECT
    toStartOfHour(first_response_at) AS hour,
    channel,
    queue,
    count() AS first_responses,
    avg(frt_seconds) AS frt_mean_seconds,
    quantileExactLow(0.5)(frt_seconds) AS frt_p50_seconds,
    quantileExactLow(0.9)(frt_seconds) AS frt_p90_seconds,
    max(frt_seconds) AS frt_max_seconds,
    avg(frt_business_seconds) AS frt_business_mean_seconds,
    quantileExactLow(0.9)(frt_business_seconds) AS frt_business_p90_seconds
FROM conversations_latest
WHERE frt_seconds IS NOT NULL
GROUP BY hour, channel, queue;

-- Resolution time (start to latest resolution) by hour of that resolution.
CREATE OR REPLACE VIEW resolution_hourly AS
SELECT
    toStartOfHour(resolved_at) AS hour,
    channel,
    queue,
    count() AS resolved,
    avg(resolution_seconds) AS resolution_mean_seconds,
    quantileExactLow(0.5)(resolution_seconds) AS resolution_p50_seconds,
    quantileExactLow(0.9)(resolution_seconds) AS resolution_p90_seconds
FROM conversations_latest
WHERE resolution_seconds IS NOT NULL
GROUP BY hour, channel, queue;

-- Service level by hour, from the final window rows: answered within target over answered plus
-- abandoned, short abandons left out (contract 6.2).
CREATE OR REPLACE VIEW service_level_hourly AS
SELECT
    toStartOfHour(window_start) AS hour,
    channel,
    queue,
    sum(first_responses) AS answered,
    toUInt64(round(sum(ifNull(frt_sla_ratio, 0) * first_responses))) AS answered_within_target,
    sum(abandoned) AS abandoned,
    sum(abandoned_short) AS abandoned_short,
    if(answered + abandoned - abandoned_short > 0,
       answered_within_target / (answered + abandoned - abandoned_short), NULL) AS service_level_ratio
FROM metrics_window
GROUP BY hour, channel, queue;

-- What customers are upset about: the most frequent words of negative customer messages
-- (sentiment <= -0.05), per day, channel and queue, with common English stop-words removed.
CREATE OR REPLACE VIEW negative_words_daily AS
SELECT
    toDate(event_time) AS day,
    channel,
    queue,
    word,
    count() AS mentions,
    uniqExact(conversation_id) AS conversations
FROM interactions_dedup
ARRAY JOIN arrayDistinct(splitByNonAlpha(lower(ifNull(text, '')))) AS word
WHERE type = 'message' AND direction = 'inbound' AND author = 'customer'
    AND sentiment <= -0.05
    AND length(word) >= 3
    AND word NOT IN (
        'the', 'and', 'for', 'are', 'but', 'not', 'you', 'your', 'yours', 'all', 'any', 'can', 'had',
        'her', 'was', 'one', 'our', 'out', 'day', 'get', 'has', 'him', 'his', 'how', 'man', 'new',
        'now', 'old', 'see', 'two', 'way', 'who', 'boy', 'did', 'its', 'let', 'put', 'say', 'she',
        'too', 'use', 'this', 'that', 'with', 'have', 'from', 'they', 'will', 'would', 'there',
        'their', 'what', 'about', 'which', 'when', 'make', 'like', 'time', 'just', 'know', 'take',
        'into', 'year', 'some', 'could', 'them', 'than', 'then', 'look', 'only', 'come', 'over',
        'think', 'also', 'back', 'after', 'work', 'first', 'well', 'even', 'want', 'because',
        'these', 'give', 'most', 'been', 'were', 'being', 'does', 'doing', 'very', 'here', 'where',
        'why', 'again', 'still', 'much', 'really', 'dont', 'don', 'didn', 'doesn', 'isn', 'wasn',
        'aren', 'won', 'can', 'cant', 'couldn', 'shouldn', 'wouldn', 'haven', 'hasn', 'hadn', 'ive',
        'im', 'its', 'thats', 'theres', 'youre', 'please', 'thanks', 'thank', 'hello', 'yes',
        'should', 'those', 'every', 'each', 'such', 'same', 'other', 'more', 'other', 'while',
        'through', 'during', 'before', 'under', 'above', 'below', 'between', 'both', 'few', 'own',
        'off', 'once', 'ever', 'never', 'yet', 'got', 'getting', 'going', 'gone', 'may', 'might',
        'must', 'shall', 'am', 'is', 'an', 'as', 'at', 'be', 'by', 'do', 'if', 'in', 'it', 'me',
        'my', 'no', 'of', 'on', 'or', 'so', 'to', 'up', 'us', 'we'
    )
GROUP BY day, channel, queue, word;
