//! `sslmode` against a server with TLS on and a certificate the test makes.

use synckit::postgres::{Config, PgStore};
use synckit::{Error, EventStore};
use synckit_workspace::{raw_client, tls_cluster};

/// Connects with `extra` added to the connection string; returns whether
/// the store's pooled connection is encrypted, or the connect error.
async fn connect(host: &str, extra: &str, app: &str) -> Result<bool, Error> {
    let cluster = tls_cluster();
    let url = format!(
        "host={host} port={} user=postgres dbname=postgres application_name={app} {extra}",
        cluster.server.port()
    );
    let mut config = Config::new(url);
    config.min_idle_conns = 1;
    config.max_open_conns = 1;
    let store = PgStore::connect(config).await?;
    store.latest_version().await?;
    let admin = raw_client(&cluster.server.url("postgres")).await;
    let row = admin
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    store.close().await?;
    Ok(row.get::<_, Option<bool>>(0).unwrap_or(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_are_honoured() {
    let cluster = tls_cluster();
    let ca = cluster.ca.display().to_string();
    let other = cluster.other_ca.display().to_string();

    assert!(
        !connect("127.0.0.1", "sslmode=disable", "t_disable")
            .await
            .unwrap()
    );
    assert!(
        connect("127.0.0.1", "sslmode=prefer", "t_prefer")
            .await
            .unwrap()
    );
    assert!(
        connect("127.0.0.1", "", "t_default").await.unwrap(),
        "prefer is the default"
    );
    assert!(
        connect("127.0.0.1", "sslmode=require", "t_require")
            .await
            .unwrap()
    );

    // verify-ca checks the chain, not the name (the certificate is for
    // localhost, the host is an address).
    assert!(
        connect(
            "127.0.0.1",
            &format!("sslmode=verify-ca sslrootcert={ca}"),
            "t_ca"
        )
        .await
        .unwrap()
    );
    let err = connect(
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert={other}"),
        "t_ca_bad",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidConnection { .. }), "{err}");
    // require with a root certificate verifies the chain, as in libpq.
    let err = connect(
        "127.0.0.1",
        &format!("sslmode=require sslrootcert={other}"),
        "t_req_bad",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidConnection { .. }), "{err}");

    // verify-full checks the name too.
    assert!(
        connect(
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}"),
            "t_full"
        )
        .await
        .unwrap()
    );
    let err = connect(
        "127.0.0.1",
        &format!("sslmode=verify-full sslrootcert={ca}"),
        "t_full_bad",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidConnection { .. }), "{err}");
    let err = connect("127.0.0.1", "sslmode=sometimes", "t_junk")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown sslmode"), "{err}");
}
