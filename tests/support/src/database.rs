//! A fresh, migrated database per test: cloned from a template migrated once per test process (its name
//! changes with the migrations), dropped when the test's [`crate::TestApp`] goes.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::OnceCell;
use trading_monitor::storage;
use uuid::Uuid;

use crate::TestApp;

/// The PostgreSQL server tests use (`TM_TEST_DATABASE_URL`, default the local trust-auth server).
fn admin_options() -> PgConnectOptions {
    let url = std::env::var("TM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into());
    PgConnectOptions::from_str(&url).expect("TM_TEST_DATABASE_URL is a PostgreSQL URL")
}

/// The URL of `database` on the tests' PostgreSQL server.
pub fn url_for(database: &str) -> String {
    let o = admin_options();
    format!("postgres://{}@{}:{}/{database}?sslmode=disable", o.get_username(), o.get_host(), o.get_port())
}

/// A migrated template database, created once per test process; its name changes with the migrations.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for m in storage::MIGRATOR.iter() {
                for b in m.checksum.iter() {
                    hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            let name = format!("tm_test_template_{hash:016x}");
            let mut admin = admin_options().connect().await.expect("PostgreSQL is reachable");
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            if !exists {
                let building = format!("{name}_building_{}", std::process::id());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{building}\"")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let pool = PgPool::connect(&url_for(&building)).await.unwrap();
                storage::migrate(&pool).await.expect("migrations apply");
                pool.close().await;
                // Another test process may have won the race; either way a complete template exists afterwards.
                let renamed =
                    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"")))
                        .execute(&mut admin)
                        .await;
                if renamed.is_err() {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{building}\"")))
                        .execute(&mut admin)
                        .await;
                }
            }
            name
        })
        .await
}

/// Creates a fresh, migrated database for one test.
pub async fn fresh_database() -> String {
    let template = template().await;
    let name = format!("tm_test_{}", Uuid::new_v4().simple());
    let mut admin = admin_options().connect().await.unwrap();
    for attempt in 0.. {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")))
            .execute(&mut admin)
            .await;
        match created {
            Ok(_) => break,
            // Cloning fails while another session briefly touches the template; retry.
            Err(e) if attempt < 50 => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot create test database: {e}"),
        }
    }
    name
}

/// Drops a test database.
pub async fn drop_database(database: &str) {
    if let Ok(mut admin) = admin_options().connect().await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")))
            .execute(&mut admin)
            .await;
    }
}

/// Holds a symbol's ingest lock (as `storage::quotes::record` takes it) until the transaction is dropped, so a
/// quote batch for that symbol waits.
pub async fn hold_symbol(app: &TestApp, symbol: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('trading-monitor:symbol:' || $1, 0))")
        .bind(symbol)
        .execute(&mut *blocker)
        .await
        .unwrap();
    blocker
}
