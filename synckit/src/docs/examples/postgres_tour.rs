use synckit::postgres::{Config, PgStore};
use synckit::{Cursor, EventStore, ExpectedVersion, NewEvent};

/// Connects, appends, loads and closes. `database_url` is a URL such as
/// `postgres://app:secret@db.internal:5432/events` or a key=value string.
pub async fn postgres_tour(database_url: &str) -> synckit::Result<()> {
    // TLS (`sslmode=require`, `verify-full`) needs the `tls` feature; without
    // it the default `sslmode=prefer` connects in plain text.
    let mut config = Config::new(database_url);
    config.max_open_conns = 50;
    let store = PgStore::connect(config).await?; // connects, runs pending migrations
    let event = NewEvent::new("order-1", "OrderPlaced", serde_json::json!({"total": 12}));
    let stored = store.append(ExpectedVersion::NoStream, vec![event]).await?;
    let page = store.load(Cursor::START).await?;
    assert_eq!(page, stored);
    let pool = store.stats()?; // max_open, open, in_use, idle, waiting
    assert_eq!(pool.max_open, 50);
    store.close().await?; // later calls: Error::StoreClosed
    Ok(())
}
