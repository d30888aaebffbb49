-- synckit's event store schema.
--
-- The seed's columns, plus `stream_version` (position within the aggregate)
-- and the triggers that give readers a gap-free fence and notify listeners.

CREATE TABLE events (
    version        BIGSERIAL PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE
                   CHECK (id <> '' AND octet_length(id) <= 255),
    aggregate_id   TEXT NOT NULL
                   CHECK (aggregate_id <> '' AND octet_length(aggregate_id) <= 1024),
    event_type     TEXT NOT NULL
                   CHECK (event_type <> '' AND octet_length(event_type) <= 255),
    data           JSONB,
    metadata       JSONB,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    stream_name    TEXT GENERATED ALWAYS AS ('stream_' || aggregate_id) STORED,
    stream_version BIGINT NOT NULL CHECK (stream_version > 0),
    CONSTRAINT events_stream_version_key UNIQUE (aggregate_id, stream_version)
);

-- Versions are taken by the trigger below, after it has marked the
-- transaction as pending; a column default would take them too early.
ALTER TABLE events ALTER COLUMN version DROP DEFAULT;

-- The seed's indexes, less `version` (the primary key) and `aggregate_id`
-- (the leading column of events_stream_version_key). The type index carries
-- `version` so that type-filtered reads walk it in order.
CREATE INDEX idx_events_created_at ON events (created_at);
CREATE INDEX idx_events_stream_name ON events (stream_name);
CREATE INDEX idx_events_type ON events (event_type, version);
CREATE INDEX idx_events_data_gin ON events USING GIN (data);
CREATE INDEX idx_events_metadata_gin ON events USING GIN (metadata);

-- The gap-free fence.
--
-- A BIGSERIAL value is taken at insert but becomes visible at commit, so a
-- transaction holding version 41 can commit after version 42. Before its
-- first version, every writing transaction takes a shared, transaction-scoped
-- advisory lock whose key is 2^62 + (the sequence's value + 1): a lower bound
-- of every version it will hold. The lock lives until commit or rollback and
-- shows in pg_locks. `synckit_fence()` returns the highest version below
-- which no transaction is pending: the sequence's value, or one less than the
-- lowest pending mark. Readers read up to the fence in a later statement, so
-- everything at or below it is committed (or rolled back) and visible.
--
-- Writers never wait for each other (the locks are shared); the cost is one
-- lock per transaction and a row-level trigger.
CREATE FUNCTION synckit_assign_positions() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
BEGIN
    IF coalesce(current_setting('synckit.pending_mark', true), '') <> 'on' THEN
        SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
          INTO head FROM events_version_seq;
        PERFORM pg_advisory_xact_lock_shared(4611686018427387904 + head + 1);
        PERFORM set_config('synckit.pending_mark', 'on', true);
    END IF;
    IF NEW.stream_version IS NULL THEN
        -- The next position in the aggregate's stream (plain SQL inserts,
        -- and appends without an expected version). The stream's lock
        -- (two-key form, which the fence ignores) makes such writers take
        -- turns: each reads the head after the previous one committed, as
        -- this statement gets a fresh snapshot, so none of them loses a
        -- race on the stream's unique position.
        PERFORM pg_advisory_xact_lock(1937337195, hashtext(NEW.aggregate_id));
        SELECT coalesce(max(stream_version), 0) + 1 INTO NEW.stream_version
          FROM events WHERE aggregate_id = NEW.aggregate_id;
    END IF;
    -- After the stream's lock: a writer that waited for it takes a higher
    -- version than the one it waited for, so a stream's positions follow
    -- the global order.
    NEW.version := nextval('events_version_seq');
    RETURN NEW;
END
$$;

CREATE TRIGGER events_assign_positions
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION synckit_assign_positions();

-- PL/pgSQL rather than SQL: the server keeps its plan for the session
-- instead of planning the body on every call (a SQL function's body is
-- planned per call), which more than halves the cost of every read.
CREATE FUNCTION synckit_fence() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN LEAST(
        (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
           FROM events_version_seq),
        (SELECT min((((l.classid::bigint - 1073741824) << 32) | l.objid::bigint)) - 1
           FROM pg_locks l
          WHERE l.locktype = 'advisory'
            AND l.objsubid = 1
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND l.classid::bigint >= 1073741824
            AND l.classid::bigint < 2147483648));
END
$$;

-- Notifications: one on the aggregate's channel, one on `events_global`,
-- with the seed's payload. Channel names are limited to 63 bytes: longer
-- `stream_{aggregate_id}` names become `stream_md5_{md5(aggregate_id)}`.
CREATE FUNCTION synckit_stream_channel(aggregate_id text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN octet_length('stream_' || aggregate_id) <= 63
                THEN 'stream_' || aggregate_id
                ELSE 'stream_md5_' || md5(aggregate_id) END
$$;

CREATE FUNCTION notify_event_inserted() RETURNS trigger
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

CREATE TRIGGER events_notify_trigger
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION notify_event_inserted();

-- Durable subscriptions: the last acknowledged version of each name.
CREATE TABLE synckit_checkpoints (
    name       TEXT PRIMARY KEY CHECK (name <> '' AND octet_length(name) <= 255),
    position   BIGINT NOT NULL CHECK (position >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
