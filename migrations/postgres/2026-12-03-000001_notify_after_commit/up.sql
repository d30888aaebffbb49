-- synckit's own appends notify after their commit.
--
-- PostgreSQL serializes the commits of every transaction that issued a
-- NOTIFY (one cluster-wide lock, held until the commit's WAL flush is
-- done), so writers that notify inside their transaction commit one at a
-- time. synckit's appends now set `synckit.notify` to `off` for their
-- transaction, and once it has committed send the same notifications from
-- a transaction of their own, which holds that lock only across its own
-- small commit (and does not wait for a WAL flush: it wrote nothing that
-- must survive a crash). Inserts that do not set it, plain SQL and older
-- synckit processes, notify from the trigger as before; the payloads are
-- built by one function, so a listener cannot tell the two apart.

-- The payload: the seed's fields, or a shortened one when that would not
-- fit `pg_notify`'s limit (see the `notify_payload_fits` migration).
CREATE FUNCTION synckit_notify_payload(version bigint, id text, aggregate_id text,
                                       event_type text, created_at timestamptz)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN octet_length(full_payload) < 8000 THEN full_payload
                ELSE json_build_object(
                         'version', version,
                         'id', id,
                         'event_type', event_type,
                         'created_at', created_at,
                         'truncated', true)::text
           END
      FROM (SELECT json_build_object(
                       'version', version,
                       'id', id,
                       'aggregate_id', aggregate_id,
                       'event_type', event_type,
                       'stream_name', 'stream_' || aggregate_id,
                       'created_at', created_at)::text AS full_payload) f
$$;

-- One event's notifications: on its stream's channel, then on
-- `events_global`.
CREATE FUNCTION synckit_notify(version bigint, id text, aggregate_id text,
                               event_type text, created_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    payload text := synckit_notify_payload(version, id, aggregate_id, event_type, created_at);
BEGIN
    PERFORM pg_notify(synckit_stream_channel(aggregate_id), payload);
    PERFORM pg_notify('events_global', payload);
END
$$;

-- The notifications of committed events, in array order, from a
-- transaction that commits without waiting for its WAL flush.
CREATE FUNCTION synckit_notify_committed(versions bigint[], ids text[], aggregate_ids text[],
                                         event_types text[], created timestamptz[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. coalesce(array_length(versions, 1), 0) LOOP
        PERFORM synckit_notify(versions[i], ids[i], aggregate_ids[i], event_types[i], created[i]);
    END LOOP;
END
$$;

-- The notifications of the events this session's appends recorded in the
-- session setting `synckit.appended`, which it then clears. An append
-- records each event it inserts (`{"v": version, "i": id, "a": aggregate
-- id, "t": type, "c": time},` per event) in the statement that inserts
-- them, so a rollback un-records them, and the connection sends this
-- statement right behind the append's, in the same round trip. It reads
-- no table; with nothing recorded it writes nothing and takes no
-- transaction id.
CREATE FUNCTION synckit_notify_appended() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    listed text := current_setting('synckit.appended', true);
    e json;
BEGIN
    IF listed IS NULL OR listed = '' THEN
        RETURN;
    END IF;
    PERFORM set_config('synckit.appended', '', false);
    PERFORM set_config('synchronous_commit', 'off', true);
    -- A loop measured faster than one set-based statement (16 ms against
    -- 22 ms for 1,000 events); either way most of the time is pg_notify's
    -- own, the same the trigger spends.
    FOR e IN SELECT json_array_elements(('[' || rtrim(listed, ',') || ']')::json) LOOP
        PERFORM synckit_notify((e->>'v')::bigint, e->>'i', e->>'a', e->>'t',
                               (e->>'c')::timestamptz);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION notify_event_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM synckit_notify(NEW.version, NEW.id, NEW.aggregate_id, NEW.event_type, NEW.created_at);
    RETURN NULL;
END
$$;

-- The condition keeps rows of a quiet transaction out of the trigger queue
-- altogether.
DROP TRIGGER events_notify_trigger ON events;
CREATE TRIGGER events_notify_trigger
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (current_setting('synckit.notify', true) IS DISTINCT FROM 'off')
    EXECUTE FUNCTION notify_event_inserted();

