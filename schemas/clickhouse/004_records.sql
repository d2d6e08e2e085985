-- ccpipe storage, migration 004: every record a topic can carry (issue of real producers).
-- Idempotent: every statement may run again.

-- A dead letter keeps its record's full size beside the clipped payload (pipeline/deadletter.py),
-- so the row of an oversized record says how large it was.
ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS payload_bytes UInt64 AFTER payload;

-- A conversation is final once the newest event time is the FCR horizon past its resolution
-- (contract section 2). The newest event time is the store's, over every input partition: a
-- row says when its conversation becomes final (resolved_at + H), and the view compares that
-- with the newest event stored, so a row written before its horizon passed is never stale and a
-- partition behind the others does not hold back its conversations. Rows written before this
-- migration keep the flag they were written with.
ALTER TABLE conversations
    ADD COLUMN IF NOT EXISTS fcr_final_at Nullable(DateTime64(3, 'UTC')) AFTER frt_business_seconds;

CREATE OR REPLACE VIEW conversations_latest AS
SELECT
    * EXCEPT (version, updated_at, fcr_final, fcr_final_at),
    if(isNull(fcr_final_at), fcr_final, fcr_final_at <= (SELECT max(event_time) FROM interactions)) AS fcr_final
FROM conversations
ORDER BY version DESC, updated_at DESC
LIMIT 1 BY conversation_id;
