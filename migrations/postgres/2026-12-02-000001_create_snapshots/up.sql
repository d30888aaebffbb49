-- Aggregate snapshots: a cache of one aggregate's state at a stream
-- version, written after appends and read by aggregate loads. Deleting
-- every row changes no result, only how much of a stream a load reads.
CREATE TABLE synckit_snapshots (
    aggregate_type text NOT NULL CHECK (aggregate_type <> '' AND octet_length(aggregate_type) <= 255),
    aggregate_id   text NOT NULL CHECK (aggregate_id <> '' AND octet_length(aggregate_id) <= 1024),
    stream_version bigint NOT NULL CHECK (stream_version > 0),
    schema_version bigint NOT NULL CHECK (schema_version >= 0),
    state          text NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
