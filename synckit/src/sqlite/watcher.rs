//! The wake-up source of commits made by other processes: a second
//! connection polling `PRAGMA data_version`.

use std::sync::Arc;
use std::time::Duration;

use diesel::{Connection, RunQueryDsl, SqliteConnection};

use super::Config;
use super::store::{Conn, Place, on_connection};
use crate::sql::Number;
use crate::store::hub::Hub;

/// Wakes every subscription when another connection commits.
pub(super) async fn watch_other_processes(config: Config, hub: Hub) {
    let path = config.path.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let url = path.to_str().unwrap_or_default().to_owned();
        SqliteConnection::establish(&url).ok()
    })
    .await;
    let Ok(Some(conn)) = opened else {
        return;
    };
    let conn: Conn = Arc::new(std::sync::Mutex::new(conn));
    let mut last = None;
    // Bounded both ways: a zero period is refused by tokio, a huge one
    // overflows the next deadline.
    let period = config
        .poll_interval
        .clamp(Duration::from_millis(5), Duration::from_secs(24 * 3600));
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        let version = on_connection(&conn, Place::Elsewhere, |c| {
            diesel::sql_query("SELECT data_version AS n FROM pragma_data_version").load::<Number>(c)
        })
        .await
        .ok()
        .and_then(|rows| rows.ok())
        .and_then(|rows| rows.into_iter().next())
        .and_then(|r| r.n);
        if version.is_some() && last.is_some() && version != last {
            hub.notify_all();
        }
        if version.is_some() {
            last = version;
        }
    }
}
