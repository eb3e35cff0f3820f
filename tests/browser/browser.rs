//! A real browser: Debian's headless Chromium, driven through chromedriver (WebDriver, via fantoccini), loads the
//! gateway's status page and, separately, a page served from another origin that calls the REST API with a
//! bearer token (CORS). `scripts/test.sh` installs `chromium` and `chromium-driver` when they are missing.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use uuid::Uuid;

use trading_testkit::*;

/// A chromedriver this test started; stopped (by PID) when dropped.
struct Driver {
    child: Child,
    port: u16,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn browser() -> (Driver, Client) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (scripts/test.sh installs Debian's chromium-driver)");
    let profile = std::env::temp_dir().join(format!("tm-chromium-{}", Uuid::new_v4().simple()));
    let driver = Driver { child, port, profile };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", driver.port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The flags this machine kind needs: no sandbox as root, and no background networking (the network is closed).
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", format!("--user-data-dir={}", driver.profile.display()),
            ],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// Waits until the page's visible text satisfies `check`, returning it.
async fn text_until(client: &Client, what: &str, check: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        let text = client.execute("return document.body.innerText", vec![]).await.unwrap();
        last = text.as_str().unwrap_or_default().to_owned();
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page never showed {what}; it shows:\n{last}");
}

/// Serves a page whose script calls the gateway with a bearer token and writes the outcome into the page, on
/// `listener` (another origin than the gateway's).
fn serve_other_origin(listener: tokio::net::TcpListener, gateway: SocketAddr, token: &str) {
    let html = format!(
        r#"<!doctype html><html><body><p id="out">loading</p><script>
fetch("http://{gateway}/v1/users/me/positions", {{ headers: {{ Authorization: "Bearer {token}" }} }})
  .then((r) => r.json())
  .then((b) => {{ document.getElementById("out").textContent = "first position P&L " + b.positions[0].unrealizedPnl; }})
  .catch((e) => {{ document.getElementById("out").textContent = "request failed: " + e; }});
</script></body></html>"#
    );
    let router = axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(html) }));
    tokio::spawn(async move { axum::serve(listener, router).await });
}

#[tokio::test]
async fn chromium_renders_the_status_page_and_a_cross_origin_page_calls_the_api() {
    // The allowed cross-origin page's port is chosen first, so the gateway can allow exactly that origin.
    let allowed_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed_listener.local_addr().unwrap().port();
    drop(allowed_listener);
    let app = spawn_app_with(|args| {
        args.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
        args.http.cors_allow_origins = vec![format!("http://127.0.0.1:{allowed_port}")];
    })
    .await;
    let gateway = app.http.unwrap();
    let alice = seed(&app).await;
    let own = token(alice, &[]);
    let expected_pnl = app.open_positions(alice).await.positions[0].unrealized_pnl.clone();
    assert!(!expected_pnl.is_empty());

    let (_driver, client) = browser().await;

    // The status page: paste a token, see the positions with their P&L, the drawdown level and the verdict.
    client.goto(&format!("http://{gateway}/")).await.unwrap();
    client.find(Locator::Id("token")).await.unwrap().send_keys(&own).await.unwrap();
    client.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
    let text =
        text_until(&client, "the positions and guards", |t| t.contains(&expected_pnl) && t.contains("Drawdown level"))
            .await;
    assert!(text.contains("EURUSD"), "{text}");
    assert!(text.contains("Drawdown level\tNORMAL") || text.contains("Drawdown level\nNORMAL"), "{text}");
    assert!(text.contains("Healthy: nothing to act on") || text.contains("System WARNING"), "{text}");
    assert!(text.contains("WARNING"), "the reconciliation state: {text}");

    // A bad token: the page says so.
    let field = client.find(Locator::Id("token")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys("not-a-token").await.unwrap();
    client.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
    let text = text_until(&client, "an error", |t| t.contains("Cannot load the account: 401")).await;
    assert!(text.contains("TOKEN_INVALID"), "{text}");
    assert!(text.contains("Not signed in"), "{text}");

    // Another origin, allowed by CORS: its script reads the API with a bearer token.
    serve_other_origin(tokio::net::TcpListener::bind(("127.0.0.1", allowed_port)).await.unwrap(), gateway, &own);
    client.goto(&format!("http://127.0.0.1:{allowed_port}/")).await.unwrap();
    let text = text_until(&client, "the P&L", |t| !t.contains("loading")).await;
    assert_eq!(text.trim(), format!("first position P&L {expected_pnl}"));

    // An origin not on the list: the browser refuses to hand the response to the script.
    let refused_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = refused_listener.local_addr().unwrap();
    serve_other_origin(refused_listener, gateway, &own);
    client.goto(&format!("http://{refused}/")).await.unwrap();
    let text = text_until(&client, "the refusal", |t| !t.contains("loading")).await;
    assert!(text.contains("request failed"), "{text}");

    // Live: a sync that makes the account CRITICAL shows on the page within a second, without a reload (the
    // page follows the guard status through EventSource).
    client.goto(&format!("http://{gateway}/")).await.unwrap();
    let field = client.find(Locator::Id("token")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(&own).await.unwrap();
    client.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
    text_until(&client, "the live stream", |t| t.contains("● live updates") && t.contains("Drawdown level")).await;
    let before = trading_monitor::storage::feed::now(&app.pool).await.unwrap();
    let submitted = std::time::Instant::now();
    app.submit(sync(alice, "1", vec![], vec![])).await.unwrap();
    // When the sync's events became deliverable (at its commit; a page read from `before` shows them), so the
    // second is counted from there; both times are printed.
    let pool = app.pool.clone();
    let deliverable = tokio::spawn(async move {
        loop {
            let page = trading_monitor::storage::feed::page(&pool, Some(alice), &before, 100).await.unwrap();
            if !page.events.is_empty() {
                return std::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let text = text_until(&client, "the CRITICAL verdict", |t| t.contains("CLOSE ALL POSITIONS")).await;
    let shown = std::time::Instant::now();
    let deliverable = deliverable.await.unwrap();
    let (after_ack, after_deliverable) = (shown - submitted, shown.saturating_duration_since(deliverable));
    println!("CRITICAL shown {after_ack:?} after the sync's ack, {after_deliverable:?} after it was deliverable");
    assert!(after_deliverable < Duration::from_secs(1), "shown {after_deliverable:?} after it was deliverable");
    assert!(text.contains("CRITICAL"), "{text}");

    client.close().await.unwrap();
}
