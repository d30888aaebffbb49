-- The GIN indexes on `data` and `metadata` become opt-in.
--
-- synckit never queries inside the JSON: its reads go by version, stream
-- and type. The two indexes served only ad-hoc JSON queries (`data @>
-- '{...}'`), and every append paid for them: with them, 100-event appends
-- from 2 writers had about twice the p99 latency (see the benchmark row
-- "batch append, 100-event batches, 2 writers" and the CHANGELOG).
-- Databases that query the JSON create them again, by hand or in their
-- own migration (CONCURRENTLY keeps writers going meanwhile; it cannot run
-- inside a transaction):
--
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_events_data_gin ON events USING GIN (data);
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_events_metadata_gin ON events USING GIN (metadata);
--
-- synckit's later migrations leave indexes of these names alone.
DROP INDEX IF EXISTS idx_events_data_gin;
DROP INDEX IF EXISTS idx_events_metadata_gin;
