-- Notifications always fit.
--
-- `pg_notify` refuses payloads of 8000 bytes or more, and `json_build_object`
-- escapes each control character into six bytes (`\u0001`), so ids, types
-- and aggregate ids within their length limits could make the payload too
-- long, and the INSERT failed. Such a row now notifies with a shortened
-- payload: no `aggregate_id` and `stream_name` (the longest fields), and
-- `"truncated": true`. A listener that cannot tell the stream from a
-- payload wakes everyone who might want it; readers read the table anyway.
CREATE OR REPLACE FUNCTION notify_event_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    payload := json_build_object(
        'version', NEW.version,
        'id', NEW.id,
        'aggregate_id', NEW.aggregate_id,
        'event_type', NEW.event_type,
        'stream_name', NEW.stream_name,
        'created_at', NEW.created_at
    )::text;
    IF octet_length(payload) >= 8000 THEN
        payload := json_build_object(
            'version', NEW.version,
            'id', NEW.id,
            'event_type', NEW.event_type,
            'created_at', NEW.created_at,
            'truncated', true
        )::text;
    END IF;
    PERFORM pg_notify(synckit_stream_channel(NEW.aggregate_id), payload);
    PERFORM pg_notify('events_global', payload);
    RETURN NULL;
END
$$;
