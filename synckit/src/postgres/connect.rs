//! Connections: parsing the connection string, connecting with the
//! configured timeout, and the pool.

use std::str::FromStr;

use diesel::connection::CacheSize;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::{FutureExt, StreamExt};

use super::config::{Config, redact};
use super::tls::{self, TlsSettings};
use crate::model::error::{Error, Result, with_causes};

/// The pool of diesel-async connections.
pub(crate) type Pool = diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection>;

/// Parses the connection string (URL or key=value), taking out the TLS
/// settings, and applies the configured connect timeout when the string
/// sets none.
#[cfg(test)]
pub(crate) fn parse(config: &Config) -> Result<(tokio_postgres::Config, TlsSettings)> {
    parse_string(config, &config.connection_string)
}

/// [`parse`] for one of the config's connection strings.
fn parse_string(
    config: &Config,
    connection_string: &str,
) -> Result<(tokio_postgres::Config, TlsSettings)> {
    let malformed = |e: &dyn std::fmt::Display| Error::InvalidConnection {
        reason: format!(
            "malformed connection string {:?}: {e}",
            redact(connection_string)
        ),
    };
    let (rest, tls) = tls::split(connection_string)?;
    let mut parsed = tokio_postgres::Config::from_str(&rest).map_err(|e| malformed(&e))?;
    if parsed.get_connect_timeout().is_none() {
        parsed.connect_timeout(config.connect_timeout);
    }
    if parsed.get_application_name().is_none() {
        parsed.application_name("synckit");
    }
    Ok((parsed, tls))
}

fn connect_error(connection_string: &str, reason: &str) -> Error {
    Error::InvalidConnection {
        reason: format!("cannot connect to {}: {reason}", redact(connection_string)),
    }
}

/// Runs a connection attempt within the connect timeout (tokio-postgres
/// applies it per host; this bounds the whole attempt).
async fn within_timeout<T, E: std::error::Error + 'static>(
    config: &Config,
    connection_string: &str,
    attempt: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(config.connect_timeout, attempt).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(connect_error(connection_string, &with_causes(&e))),
        Err(_) => Err(connect_error(
            connection_string,
            &format!("no answer within {:?}", config.connect_timeout),
        )),
    }
}

/// A raw connection, encrypted or not, before anything is built on it.
enum Opened {
    // Boxed: the connection states differ in size by hundreds of bytes.
    Plain(
        tokio_postgres::Client,
        Box<tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>>,
    ),
    #[cfg(feature = "tls")]
    Tls(
        tokio_postgres::Client,
        Box<
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tokio_postgres::Socket,
                >>::Stream,
            >,
        >,
    ),
}

/// Where a connection goes: through [`Config::connection_string`] (the
/// pool), or straight to the server for what needs a session.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    Pooled,
    Session,
}

/// Connects with the TLS the connection string asks for (the one place that
/// decides it, for the pool and the listener alike).
async fn open(config: &Config, target: Target, application_name: Option<&str>) -> Result<Opened> {
    let connection_string = match target {
        Target::Pooled => config.connection_string.as_str(),
        Target::Session => config.session_connection_string(),
    };
    let (mut parsed, tls) = parse_string(config, connection_string)?;
    if let Some(name) = application_name {
        parsed.application_name(name);
    }
    match tls.mode {
        tls::SslMode::Disable => {}
        #[cfg(feature = "tls")]
        _ => {
            let (client, connection) = within_timeout(
                config,
                connection_string,
                parsed.connect(tls::connector(&tls)?),
            )
            .await?;
            return Ok(Opened::Tls(client, Box::new(connection)));
        }
        #[cfg(not(feature = "tls"))]
        tls::SslMode::Prefer => {}
        #[cfg(not(feature = "tls"))]
        _ => {
            return Err(Error::InvalidConnection {
                reason: "this sslmode needs synckit's `tls` feature".to_owned(),
            });
        }
    }
    let (client, connection) = within_timeout(
        config,
        connection_string,
        parsed.connect(tokio_postgres::NoTls),
    )
    .await?;
    Ok(Opened::Plain(client, Box::new(connection)))
}

/// Opens one diesel-async connection, with TLS as the connection string
/// asks, and the configured statement cache.
pub(crate) async fn connect(config: &Config, target: Target) -> Result<AsyncPgConnection> {
    let setup = |e: diesel::ConnectionError| Error::InvalidConnection {
        reason: format!(
            "cannot set up a connection to {}: {}",
            config.redacted_connection_string(),
            with_causes(&e)
        ),
    };
    // Behind a transaction pooler, diesel-async's own setup statements
    // (time zone, client encoding: each prepared, then executed) run in a
    // transaction, so that the pooler keeps them on one server connection.
    let pinned = config.transaction_pooling && matches!(target, Target::Pooled);
    let mut conn = match open(config, target, None).await? {
        Opened::Plain(client, mut connection) => {
            if pinned {
                begin(&client, &mut *connection, config).await?;
            }
            AsyncPgConnection::try_from_client_and_connection(client, *connection).await
        }
        #[cfg(feature = "tls")]
        Opened::Tls(client, mut connection) => {
            if pinned {
                begin(&client, &mut *connection, config).await?;
            }
            AsyncPgConnection::try_from_client_and_connection(client, *connection).await
        }
    }
    .map_err(setup)?;
    if pinned {
        diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, "COMMIT")
            .await
            .map_err(|e| Error::database("connect", e))?;
    }
    if !config.caches_statements() {
        conn.set_prepared_statement_cache_size(CacheSize::Disabled);
    }
    Ok(conn)
}

/// Sends `BEGIN` on a connection that no task drives yet, driving it here
/// until the server has answered.
async fn begin<S, T>(
    client: &tokio_postgres::Client,
    connection: &mut tokio_postgres::Connection<S, T>,
    config: &Config,
) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let failed = |e: &tokio_postgres::Error| Error::InvalidConnection {
        reason: format!(
            "cannot set up a connection to {}: {}",
            config.redacted_connection_string(),
            with_causes(e)
        ),
    };
    let begin = client.batch_execute("BEGIN");
    futures::pin_mut!(begin);
    match futures::future::select(begin, connection).await {
        futures::future::Either::Left((outcome, _)) => outcome.map_err(|e| failed(&e)),
        futures::future::Either::Right((outcome, _)) => Err(match outcome {
            Err(e) => failed(&e),
            Ok(()) => Error::InvalidConnection {
                reason: "the connection closed during setup".to_owned(),
            },
        }),
    }
}

/// Messages of a raw connection: notifications, notices, and its end.
pub(crate) type Messages = futures::stream::BoxStream<
    'static,
    std::result::Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>,
>;

fn messages<S>(mut connection: tokio_postgres::Connection<tokio_postgres::Socket, S>) -> Messages
where
    S: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
{
    futures::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed()
}

/// Opens one raw tokio-postgres connection (outside the pool), with the
/// same TLS settings; polling the returned stream drives the connection.
pub(crate) async fn connect_raw(config: &Config) -> Result<(tokio_postgres::Client, Messages)> {
    Ok(
        match open(config, Target::Session, Some("synckit-listener")).await? {
            Opened::Plain(client, connection) => (client, messages(*connection)),
            #[cfg(feature = "tls")]
            Opened::Tls(client, connection) => (client, messages(*connection)),
        },
    )
}

/// Builds the pool. Connections are opened lazily (and `min_idle_conns` of
/// them in the background); the caller has checked that the server answers.
pub(crate) fn pool(config: &Config) -> Pool {
    let setup_config = config.clone();
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |_url| {
        let config = setup_config.clone();
        async move {
            connect(&config, Target::Pooled)
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
        .min_idle(Some(config.min_idle_conns.min(max)))
        .max_lifetime(config.conn_max_lifetime)
        .idle_timeout(config.conn_max_idle_time)
        .connection_timeout(config.connect_timeout)
        // No ping before every checkout (a round trip per operation): a
        // broken connection fails its operation, which reports the error,
        // and the pool drops it on return.
        .test_on_check_out(false)
        // The most recently used connection first: a lightly loaded store
        // keeps reusing a few warm connections (prepared statements, cached
        // plans) and the idle timeout closes the rest.
        .queue_strategy(bb8::QueueStrategy::Lifo)
        .build_unchecked(manager)
}
