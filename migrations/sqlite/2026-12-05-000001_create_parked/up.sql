-- Parked events: an event a durable subscription's handler kept failing on
-- (status 'failed'), the later events of the same aggregate that wait
-- behind it ('waiting'), and a failed one an operator asked to try again
-- ('retry'). The subscription's checkpoint moves past them; it hands an
-- aggregate's rows to its handler again, in version order, once the first
-- of them is no longer 'failed' (retried, or skipped: deleted).
-- `parked_at` is milliseconds since the Unix epoch by the database's clock.
CREATE TABLE synckit_parked (
    subscription TEXT NOT NULL CHECK (subscription <> ''),
    version      INTEGER NOT NULL CHECK (version > 0),
    event_id     TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('failed', 'waiting', 'retry')),
    error        TEXT NOT NULL,
    attempts     INTEGER NOT NULL CHECK (attempts >= 0),
    parked_at    INTEGER NOT NULL,
    PRIMARY KEY (subscription, version)
);
