DROP TRIGGER events_notify_trigger ON events;
CREATE TRIGGER events_notify_trigger
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION notify_event_inserted();

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

DROP FUNCTION synckit_notify_appended();
DROP FUNCTION synckit_notify_committed(bigint[], text[], text[], text[], timestamptz[]);
DROP FUNCTION synckit_notify(bigint, text, text, text, timestamptz);
DROP FUNCTION synckit_notify_payload(bigint, text, text, text, timestamptz);
