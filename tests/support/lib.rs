//! Shared helpers of synckit's integration tests and examples: where the
//! PostgreSQL server comes from, and a fresh database per test.
//!
//! The server is, in order: `DATABASE_URL` when set; the local server at
//! `127.0.0.1:5432` (user `postgres`); a private throwaway cluster started
//! from the installed PostgreSQL binaries (as the `postgres` OS user when
//! running as root), stopped and deleted when the test process exits.
//! Without any of them, [`database_url`] fails with what to install or set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Connection parameters of the server the tests use.
#[derive(Debug, Clone)]
pub struct Server {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    admin_db: String,
}

impl Server {
    /// A key=value connection string for `dbname`.
    pub fn url(&self, dbname: &str) -> String {
        let mut s = format!(
            "host={} port={} user={} dbname={}",
            quote(&self.host),
            self.port,
            quote(&self.user),
            quote(dbname)
        );
        if let Some(p) = &self.password {
            s.push_str(&format!(" password={}", quote(p)));
        }
        s
    }

    /// A key=value connection string for the administrative database (the
    /// one `DATABASE_URL` names, else `postgres`).
    pub fn admin_url(&self) -> String {
        self.url(&self.admin_db)
    }

    /// The host (a name, an address or a socket directory).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn from_connection_string(conn: &str) -> Result<Self, String> {
        let config = tokio_postgres::Config::from_str(conn).map_err(|e| e.to_string())?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "127.0.0.1".to_owned(),
        };
        Ok(Server {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().unwrap_or("postgres").to_owned(),
            password: config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            admin_db: config.get_dbname().unwrap_or("postgres").to_owned(),
        })
    }
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// The server for this test process, found or started once.
pub fn server() -> Server {
    SERVER
        .get_or_init(|| {
            // Probing uses its own runtime: keep it off the caller's.
            std::thread::spawn(find_server)
                .join()
                .unwrap_or_else(|_| Err("finding a PostgreSQL server panicked".to_owned()))
        })
        .clone()
        .unwrap_or_else(|message| panic!("{message}"))
}

fn can_connect(conn: &str) -> bool {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    runtime.block_on(async {
        let Ok(mut config) = tokio_postgres::Config::from_str(conn) else {
            return false;
        };
        config.connect_timeout(Duration::from_secs(3));
        matches!(
            tokio::time::timeout(
                Duration::from_secs(5),
                config.connect(tokio_postgres::NoTls)
            )
            .await,
            Ok(Ok(_))
        )
    })
}

fn find_server() -> Result<Server, String> {
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.trim().is_empty()
        && std::env::var("SYNCKIT_TEST_PRIVATE_CLUSTER").is_err()
        // A SQLite path in DATABASE_URL is not a PostgreSQL server.
        && (url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains('='))
    {
        if !can_connect(&url) {
            return Err(format!(
                "DATABASE_URL is set but its server does not answer; start it or unset DATABASE_URL \
                 (given: {})",
                redact(&url)
            ));
        }
        return Server::from_connection_string(&url);
    }
    let local = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
    if std::env::var("SYNCKIT_TEST_PRIVATE_CLUSTER").is_err() && can_connect(local) {
        return Server::from_connection_string(local);
    }
    start_private_cluster()
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| d.ok())
                .map(|d| d.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    versioned.sort();
    versioned.reverse();
    let system = ["/usr/sbin", "/usr/bin"].map(|d| Path::new(d).join(name));
    in_path
        .into_iter()
        .chain(versioned)
        .chain(system)
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn as_cluster_owner(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs a watchdog shell `script` (its arguments `$0`, `$1`, ... are
/// `args`), as the `postgres` OS user when running as root: it starts a
/// server program and stops it once this process exits, however it exits.
fn spawn_watchdog(script: &str, root: bool, args: &[&Path]) -> Result<(), String> {
    let mut watchdog = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c"]);
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c");
        c
    };
    watchdog
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start {}: {e}", args[0].display()))
}

fn start_private_cluster() -> Result<Server, String> {
    start_cluster("main", |_, _| Ok(()), &[])
}

/// A private cluster with TLS on, serving a certificate for `localhost`
/// signed by a throwaway CA.
#[derive(Debug, Clone)]
pub struct TlsCluster {
    /// The server (host 127.0.0.1).
    pub server: Server,
    /// PEM of the CA that signed the server certificate.
    pub ca: PathBuf,
    /// PEM of another CA, which did not.
    pub other_ca: PathBuf,
}

static TLS_CLUSTER: OnceLock<Result<TlsCluster, String>> = OnceLock::new();

/// The TLS test cluster of this process, started once (needs the
/// PostgreSQL binaries and `openssl`).
pub fn tls_cluster() -> TlsCluster {
    TLS_CLUSTER
        .get_or_init(|| {
            std::thread::spawn(start_tls_cluster)
                .join()
                .unwrap_or_else(|_| Err("TLS cluster setup panicked".to_owned()))
        })
        .clone()
        .unwrap_or_else(|message| panic!("{message}"))
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("the TLS tests need `openssl` (apt-get install openssl): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn start_tls_cluster() -> Result<TlsCluster, String> {
    let certs = std::env::temp_dir().join(format!("synckit-certs-{}", std::process::id()));
    std::fs::create_dir_all(&certs).map_err(|e| e.to_string())?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        let key = format!("{ca}.key");
        let pem = format!("{ca}.pem");
        let subject = format!("/CN=synckit test {ca}");
        args.extend([
            "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject,
        ]);
        openssl(&certs, &args)?;
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&certs, &args)?;
    std::fs::write(certs.join("san.ext"), "subjectAltName=DNS:localhost\n")
        .map_err(|e| e.to_string())?;
    openssl(
        &certs,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    )?;
    let certs_for_setup = certs.clone();
    let server = start_cluster(
        "tls",
        move |data, root| {
            for file in ["server.crt", "server.key"] {
                std::fs::copy(certs_for_setup.join(file), data.join(file))
                    .map_err(|e| e.to_string())?;
                if root {
                    Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(data.join(file))
                        .status()
                        .map_err(|e| e.to_string())?;
                }
            }
            Command::new("chmod")
                .arg("600")
                .arg(data.join("server.key"))
                .status()
                .map_err(|e| e.to_string())?;
            Ok(())
        },
        &["-c", "ssl=on"],
    )?;
    Ok(TlsCluster {
        server,
        ca: certs.join("ca.pem"),
        other_ca: certs.join("other-ca.pem"),
    })
}

fn start_cluster(
    name: &str,
    setup: impl FnOnce(&Path, bool) -> Result<(), String>,
    extra_args: &[&str],
) -> Result<Server, String> {
    let missing = "no PostgreSQL server answers at 127.0.0.1:5432 and no PostgreSQL binaries \
                   (initdb, postgres) are installed: install PostgreSQL (Debian: `apt-get install \
                   postgresql`), start a server, or set DATABASE_URL";
    let (Some(initdb), Some(postgres)) = (find_binary("initdb"), find_binary("postgres")) else {
        return Err(missing.to_owned());
    };
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("synckit-pg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if root {
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err(format!(
                "running as root, the private cluster needs the `postgres` OS user to own {}",
                dir.display()
            ));
        }
    }
    let data = dir.join("data");
    let output = as_cluster_owner(&initdb, root)
        .args(["-D"])
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", initdb.display()))?;
    if !output.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    setup(&data, root)?;
    let extra = extra_args.join(" ");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))?;
    // A watchdog stops the cluster and deletes it once this process exits,
    // however it exits.
    let script = format!(
        "\"$0\" -D \"$1\" -p {port} -k \"$2\" -c listen_addresses=127.0.0.1 -c fsync=off \
         -c max_connections=300 {extra} >\"$2/log\" 2>&1 & pg=$!; \
         while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 1; done; \
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf \"$2\"",
        parent = std::process::id()
    );
    spawn_watchdog(&script, root, &[postgres.as_path(), &data, &dir])?;
    let server = Server {
        host: "127.0.0.1".to_owned(),
        port,
        user: "postgres".to_owned(),
        password: None,
        admin_db: "postgres".to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if can_connect(&server.url("postgres")) {
            eprintln!("synckit tests: started a private PostgreSQL cluster on port {port}");
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    Err(format!(
        "the private PostgreSQL cluster did not start within 60 s:\n{log}"
    ))
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);
static CLEANED: OnceLock<()> = OnceLock::new();

async fn admin(server: &Server) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&server.url(&server.admin_db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"));
    tokio::spawn(connection);
    client
}

/// Drops the databases that earlier test processes left behind.
async fn drop_stale_databases(client: &tokio_postgres::Client) {
    let rows = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'synckit_t\\_%'",
            &[],
        )
        .await
        .unwrap_or_default();
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// A new, empty database for one test; returns its connection string.
pub async fn database_url() -> String {
    let (name, server) = new_database().await;
    server.url(&name)
}

/// A new, empty database for one test, reached through [`pgbouncer`]:
/// returns the connection string through the pooler, and a direct one.
pub async fn pooled_database_url() -> (String, String) {
    let bouncer = pgbouncer();
    let (name, server) = new_database().await;
    (bouncer.url(&name), server.url(&name))
}

/// Creates a new, empty database; returns its name.
async fn new_database() -> (String, Server) {
    let server = server();
    let client = admin(&server).await;
    if CLEANED.set(()).is_ok() {
        drop_stale_databases(&client).await;
    }
    let name = format!(
        "synckit_t_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    (name, server)
}

/// A raw client on `url`, driven on the current runtime.
pub async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect: {e}"));
    tokio::spawn(connection);
    client
}

/// A raw connection that runs `listen` (`LISTEN ...` statements), and the
/// notifications it receives as (channel, payload). Keep the client: the
/// connection ends with it.
pub async fn raw_listener(
    url: &str,
    listen: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    client
        .batch_execute(listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen: {e}"));
    (client, rx)
}

/// A PgBouncer in transaction pooling mode in front of the test server.
#[derive(Debug, Clone)]
pub struct Bouncer {
    server: Server,
    port: u16,
}

impl Bouncer {
    /// A key=value connection string for `dbname` through the pooler.
    pub fn url(&self, dbname: &str) -> String {
        let mut through = self.server.clone();
        through.host = "127.0.0.1".to_owned();
        through.port = self.port;
        through.url(dbname)
    }
}

static BOUNCER: OnceLock<Result<Bouncer, String>> = OnceLock::new();

/// The PgBouncer of this test process (`pool_mode = transaction`, a small
/// pool so that clients share server connections), started once on a free
/// port against [`server`] and stopped when the process exits. Needs the
/// `pgbouncer` binary (Debian: `apt-get install pgbouncer`; `.ci/run`
/// installs it when missing).
pub fn pgbouncer() -> Bouncer {
    let server = server();
    BOUNCER
        .get_or_init(|| {
            // Probing uses its own runtime: keep it off the caller's.
            std::thread::spawn(move || start_bouncer(server))
                .join()
                .unwrap_or_else(|_| Err("starting PgBouncer panicked".to_owned()))
        })
        .clone()
        .unwrap_or_else(|message| panic!("{message}"))
}

fn start_bouncer(server: Server) -> Result<Bouncer, String> {
    let Some(binary) = find_binary("pgbouncer") else {
        return Err(
            "the pooler tests need PgBouncer: install it (Debian: `apt-get install \
                    pgbouncer`; `.ci/run` installs it when missing)"
                .to_owned(),
        );
    };
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("synckit-pgbouncer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))?;
    let password = server
        .password
        .as_ref()
        .map(|p| format!(" password={}", quote(p)))
        .unwrap_or_default();
    let ini = format!(
        "[databases]\n* = host={} port={} user={}{password}\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
         max_client_conn = 500\ndefault_pool_size = 3\nserver_idle_timeout = 1\nlogfile = {dir}/pgbouncer.log\n\
         ignore_startup_parameters = extra_float_digits,options\n",
        server.host,
        server.port,
        server.user,
        dir = dir.display()
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("users.txt"), format!("\"{}\" \"\"\n", server.user))
        .map_err(|e| e.to_string())?;
    if root {
        // PgBouncer refuses to run as root.
        let status = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err("running as root, PgBouncer needs the `postgres` OS user".to_owned());
        }
    }
    // A watchdog stops the pooler and deletes its files once this process
    // exits, however it exits.
    let script = format!(
        "\"$0\" \"$1/pgbouncer.ini\" >/dev/null 2>&1 & pid=$!; \
         while [ -d /proc/{parent} ] && kill -0 $pid 2>/dev/null; do sleep 1; done; \
         kill -INT $pid 2>/dev/null; wait $pid; rm -rf \"$1\"",
        parent = std::process::id()
    );
    spawn_watchdog(&script, root, &[binary.as_path(), &dir])?;
    let bouncer = Bouncer { server, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if can_connect(&bouncer.url(&bouncer.server.admin_db)) {
            eprintln!("synckit tests: started PgBouncer on port {port}");
            return Ok(bouncer);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
    Err(format!("PgBouncer did not start within 30 s:\n{log}"))
}
