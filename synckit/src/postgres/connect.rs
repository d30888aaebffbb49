//! Connections: parsing the connection string, connecting with the
//! configured timeout, and the pool.

use std::str::FromStr;

use diesel::connection::CacheSize;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::FutureExt;

use super::config::{Config, redact};
use crate::error::{Error, Result};

/// The pool of diesel-async connections.
pub(crate) type Pool = diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection>;

/// Parses the connection string (URL or key=value) and applies the
/// configured connect timeout when the string sets none.
pub(crate) fn parse(config: &Config) -> Result<tokio_postgres::Config> {
    let mut parsed = tokio_postgres::Config::from_str(&config.connection_string).map_err(|e| {
        Error::InvalidConnection {
            reason: format!(
                "malformed connection string {:?}: {e}",
                config.redacted_connection_string()
            ),
        }
    })?;
    if parsed.get_connect_timeout().is_none() {
        parsed.connect_timeout(config.connect_timeout);
    }
    if parsed.get_application_name().is_none() {
        parsed.application_name("synckit");
    }
    Ok(parsed)
}

/// Opens one raw tokio-postgres connection and drives it on the runtime.
pub(crate) async fn connect_client(
    config: &Config,
) -> Result<(
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
)> {
    let parsed = parse(config)?;
    let connecting = parsed.connect(tokio_postgres::NoTls);
    // tokio-postgres applies the timeout per host; bound the whole attempt too.
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(Error::InvalidConnection {
            reason: format!(
                "cannot connect to {}: {e}",
                config.redacted_connection_string()
            ),
        }),
        Err(_) => Err(Error::InvalidConnection {
            reason: format!(
                "cannot connect to {}: no answer within {:?}",
                config.redacted_connection_string(),
                config.connect_timeout
            ),
        }),
    }
}

/// Opens one diesel-async connection with the configured statement cache.
pub(crate) async fn connect(config: &Config) -> Result<AsyncPgConnection> {
    let (client, connection) = connect_client(config).await?;
    let mut conn = AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(|e| Error::InvalidConnection {
            reason: format!(
                "cannot set up a connection to {}: {e}",
                config.redacted_connection_string()
            ),
        })?;
    if !config.prepared_statements {
        conn.set_prepared_statement_cache_size(CacheSize::Disabled);
    }
    Ok(conn)
}

/// Builds the pool. Connections are opened lazily (and `max_idle_conns` of
/// them in the background); the caller has checked that the server answers.
pub(crate) fn pool(config: &Config) -> Pool {
    let setup_config = config.clone();
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |_url| {
        let config = setup_config.clone();
        async move {
            connect(&config)
                .await
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
        }
        .boxed()
    });
    // The URL is only handed to `custom_setup`, which ignores it in favour of
    // the parsed config; pass the redacted form so it never sits in memory
    // twice.
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        redact(&config.connection_string),
        manager_config,
    );
    let max = config.max_open_conns.max(1);
    diesel_async::pooled_connection::bb8::Pool::builder()
        .max_size(max)
        .min_idle(Some(config.max_idle_conns.min(max)))
        .max_lifetime(config.conn_max_lifetime)
        .idle_timeout(config.conn_max_idle_time)
        .connection_timeout(config.connect_timeout)
        .build_unchecked(manager)
}
