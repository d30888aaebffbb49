-- The notification trigger as the first migration created it.
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
    PERFORM pg_notify(synckit_stream_channel(NEW.aggregate_id), payload);
    PERFORM pg_notify('events_global', payload);
    RETURN NULL;
END
$$;
