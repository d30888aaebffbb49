//! `RemoteStore` over real TCP: the shared behaviour suite through the HTTP
//! face onto SQLite and PostgreSQL, a server stopped and started again
//! under live subscriptions with writers running, and access control as a
//! client sees it.

use synckit::SubscriptionSource;
use synckit::client::{Config, RemoteStore};
use synckit::server::{self, Limits};

/// Serves `store` to anyone on a free port, with pages smaller than the
/// client's (so reads go on past the server's cap), and connects a
/// client.
pub(crate) async fn remote<S: SubscriptionSource>(store: S) -> RemoteStore {
    let app = server::router(store)
        .allow_anonymous()
        .limits(Limits::default().with_page_size(5))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = Config::new(format!("http://{address}")).with_batch_size(7);
    RemoteStore::connect(config).await.expect("connect")
}

mod on_sqlite {
    crate::behaviour_suite!(async { super::remote(crate::sqlite::fresh_store(7).await).await });
}

mod on_postgres {
    crate::behaviour_suite!(async { super::remote(crate::postgres::store_with(7).await.0).await });
}
