DROP TABLE IF EXISTS synckit_checkpoints;
DROP TABLE IF EXISTS events;
DROP FUNCTION IF EXISTS notify_event_inserted();
DROP FUNCTION IF EXISTS synckit_stream_channel(text);
DROP FUNCTION IF EXISTS synckit_fence();
DROP FUNCTION IF EXISTS synckit_assign_positions();
