-- synckit's event store schema on SQLite.
--
-- SQLite runs one write transaction at a time and assigns `version` inside
-- it, so versions become visible in commit order: readers need no fence.
CREATE TABLE events (
    version        INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE
                   CHECK (id <> '' AND length(CAST(id AS BLOB)) <= 255),
    aggregate_id   TEXT NOT NULL
                   CHECK (aggregate_id <> '' AND length(CAST(aggregate_id AS BLOB)) <= 1024),
    event_type     TEXT NOT NULL
                   CHECK (event_type <> '' AND length(CAST(event_type AS BLOB)) <= 255),
    data           TEXT,
    metadata       TEXT,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    stream_name    TEXT GENERATED ALWAYS AS ('stream_' || aggregate_id) VIRTUAL,
    stream_version INTEGER NOT NULL CHECK (stream_version > 0),
    CONSTRAINT events_stream_version_key UNIQUE (aggregate_id, stream_version)
);

CREATE INDEX idx_events_created_at ON events (created_at);
CREATE INDEX idx_events_type ON events (event_type, version);

CREATE TABLE synckit_checkpoints (
    name       TEXT PRIMARY KEY CHECK (name <> '' AND length(CAST(name AS BLOB)) <= 255),
    position   INTEGER NOT NULL CHECK (position >= 0),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
