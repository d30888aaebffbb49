//! A server that a test can stop and start again on the same port: it
//! runs in a tokio runtime of its own, so stopping it cuts every
//! connection it holds (its live feeds included), as a crash would. Shared
//! by the integration tests (`tests/it`) and the browser tests
//! (`tests/browser`) with `#[path]`.

use std::path::PathBuf;

use synckit::sqlite::SqliteStore;

/// A router over a store (its policy, limits and CORS).
pub type Build = fn(SqliteStore) -> axum::Router;

/// One server on a SQLite file.
pub struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    /// Its port, the same after a restart.
    pub port: u16,
}

impl Server {
    /// Serves the SQLite file at `path` on `port` (0: a free one) with the
    /// router `build` makes.
    pub async fn start(path: PathBuf, port: u16, build: Build) -> Server {
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the server");
            let port = runtime.block_on(async move {
                let store = SqliteStore::open(path).await.expect("open the store");
                let app = build(store);
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket.set_reuseaddr(true).expect("SO_REUSEADDR");
                socket
                    .bind(([127, 0, 0, 1], port).into())
                    .expect("bind the server's port");
                let listener = socket.listen(1024).expect("listen");
                let port = listener.local_addr().expect("address").port();
                tokio::spawn(async move { axum::serve(listener, app).await });
                port
            });
            Server {
                runtime: Some(runtime),
                port,
            }
        })
        .await
        .expect("start the server")
    }

    /// Its base address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it at once: every task and connection of its runtime goes.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
