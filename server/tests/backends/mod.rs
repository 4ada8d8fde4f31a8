//! The two store engines for tests that run on both: a SQLite file in a temporary
//! directory, or a fresh database in the PostgreSQL cluster named by
//! `BUURTSYNC_TEST_POSTGRES_URL` (scripts/test.sh starts one and sets it).

use sqlx::{Connection, PgConnection};

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test; open it as often as you like ("nodes").
pub struct Db {
    _dir: tempfile::TempDir,
    pub url: String,
}

/// The cluster the PostgreSQL variants run on. Unset is a failure, not a skip: CI
/// always sets it, and a PostgreSQL test that silently passes proves nothing.
pub fn postgres_admin_url() -> String {
    std::env::var("BUURTSYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "BUURTSYNC_TEST_POSTGRES_URL is not set, so the PostgreSQL variant cannot run. \
             Run `bash scripts/test.sh`, or start a cluster with \
             `bash scripts/ensure-postgres.sh start /tmp/bs-pg` and export the URL it prints."
        )
    })
}

/// A fresh, empty database of its own.
pub async fn database(backend: Backend) -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/nested/db.sqlite3", dir.path().display()),
        Backend::Postgres => {
            let admin = postgres_admin_url();
            let name = format!(
                "bs_test_{}",
                buurtsync_server::store::uuid_like().replace('-', "")
            );
            let mut conn = PgConnection::connect(&admin)
                .await
                .expect("connect to BUURTSYNC_TEST_POSTGRES_URL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let _ = conn.close().await;
            let (base, _) = admin.rsplit_once('/').expect("URL with a database name");
            format!("{base}/{name}")
        }
    };
    Db { _dir: dir, url }
}

/// Runs each named `async fn(Backend)` as two tests, `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::backends::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::backends::Backend::Postgres).await
                }
            )*
        }
    };
}
