-- Leases: which consumer of a durable subscription (a checkpoint name) may
-- advance it. One row per name and part (0 for a plain durable
-- subscription). `owner` is the consumer's id, `token` rises by one each
-- time the lease changes hands (the fencing token a checkpoint save checks
-- in its own statement), `expires_at` is milliseconds since the Unix epoch
-- by the database's clock, renewed by the owner's heartbeat. A released
-- lease keeps its row with `expires_at = 0`, so the token never goes back.
CREATE TABLE synckit_leases (
    name       TEXT NOT NULL CHECK (name <> '' AND octet_length(name) <= 255),
    part       INTEGER NOT NULL CHECK (part >= 0),
    owner      TEXT NOT NULL CHECK (owner <> ''),
    token      BIGINT NOT NULL CHECK (token > 0),
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (name, part)
);
