-- Aggregate snapshots: a cache of one aggregate's state at a stream
-- version, written after appends and read by aggregate loads. Deleting
-- every row changes no result, only how much of a stream a load reads.
CREATE TABLE synckit_snapshots (
    aggregate_type TEXT NOT NULL
                   CHECK (aggregate_type <> '' AND length(CAST(aggregate_type AS BLOB)) <= 255),
    aggregate_id   TEXT NOT NULL
                   CHECK (aggregate_id <> '' AND length(CAST(aggregate_id AS BLOB)) <= 1024),
    stream_version INTEGER NOT NULL CHECK (stream_version > 0),
    schema_version INTEGER NOT NULL CHECK (schema_version >= 0),
    state          TEXT NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
