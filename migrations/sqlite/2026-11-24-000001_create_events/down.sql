DROP TABLE IF EXISTS synckit_checkpoints;
DROP TABLE IF EXISTS events;
