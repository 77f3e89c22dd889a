//! Every page and form through actix's test service, against the real agent and stager.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::test::{self, TestRequest};

use crate::common::{PASSWORD, Stack, input_value};

/// A response, read.
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A tiny browser: a cookie jar and a client address.
#[derive(Clone)]
pub struct Browser {
    pub jar: HashMap<String, String>,
    pub peer: String,
}

impl Browser {
    pub fn new(peer: &str) -> Self {
        Browser {
            jar: HashMap::new(),
            peer: peer.to_string(),
        }
    }

    pub async fn send<S, B>(&mut self, app: &S, req: TestRequest) -> Resp
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let mut req = req.peer_addr(self.peer.parse().unwrap());
        if !self.jar.is_empty() {
            let c = self
                .jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.insert_header(("cookie", c));
        }
        let res = test::call_service(app, req.to_request()).await;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        for sc in headers.get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let (nv, attrs) = sc.split_once(';').unwrap_or((sc, ""));
            let (n, v) = nv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") || v.is_empty() {
                self.jar.remove(n.trim());
            } else {
                self.jar.insert(n.trim().to_string(), v.to_string());
            }
        }
        let body = test::read_body(res).await;
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get<S, B>(&mut self, app: &S, path: &str) -> Resp
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        self.send(app, TestRequest::get().uri(path)).await
    }

    /// Submits the "Prepare download" form for one release, as the product page does.
    pub async fn prepare<S, B>(&mut self, app: &S, csrf: &str, product: &str, version: &str) -> Resp
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let form = [("csrf", csrf), ("product", product), ("version", version)];
        self.post(app, "/prepare", &form).await
    }

    pub async fn post<S, B>(&mut self, app: &S, path: &str, form: &[(&str, &str)]) -> Resp
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let body = serde_urlencoded::to_string(form).unwrap();
        self.send(
            app,
            TestRequest::post()
                .uri(path)
                .insert_header(("content-type", "application/x-www-form-urlencoded"))
                .set_payload(body),
        )
        .await
    }

    /// Signs in; returns the final response of the POST.
    pub async fn login<S, B>(&mut self, app: &S, login: &str, password: &str) -> Resp
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let form = self.get(app, "/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = input_value(&form.body, "csrf").expect("csrf field on the login form");
        self.post(
            app,
            "/login",
            &[("csrf", &csrf), ("login", login), ("password", password)],
        )
        .await
    }

    /// The CSRF token of the current session (from the products page nav).
    pub async fn csrf<S, B>(&mut self, app: &S) -> String
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let p = self.get(app, "/downloads").await;
        assert_eq!(p.status, 200, "{}", p.body);
        input_value(&p.body, "csrf").unwrap()
    }
}

macro_rules! app {
    ($stack:expr) => {{
        let cfg = $stack.web_config();
        let (state, key) =
            web_frontend::startup::build_state(cfg, $stack.agent_client(), $stack.stager_client())
                .unwrap();
        test::init_service(web_frontend::startup::app(state, key)).await
    }};
    ($stack:expr, $cfg:expr) => {{
        let (state, key) =
            web_frontend::startup::build_state($cfg, $stack.agent_client(), $stack.stager_client())
                .unwrap();
        test::init_service(web_frontend::startup::app(state, key)).await
    }};
}

#[actix_web::test]
async fn login_success_shows_only_entitled_releases_newest_first() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.1.0.1:5000");
    assert_eq!(b.get(&app, "/").await.location(), "/login");
    let r = b.login(&app, "alice", PASSWORD).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/products");
    assert_eq!(b.get(&app, "/").await.location(), "/products");
    let p = b.get(&app, "/products").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Alice Example"));
    let i21 = p.body.find("alpha-2.1.bin").expect("2.1 shown");
    let i20 = p.body.find("alpha-2.0.bin").expect("2.0 shown");
    assert!(i21 < i20, "newest release first");
    assert!(
        !p.body.contains("alpha-1.0.bin"),
        "1.0 is outside >=2.0, <3"
    );
    assert!(
        !p.body.contains("alpha-3.0.bin"),
        "3.0 is outside >=2.0, <3"
    );
    assert!(!p.body.contains("beta"), "not entitled to beta");
    assert!(p.body.contains("Release notes for alpha 2.1."));
    let sha = crate::common::sha256_hex(stack.file("alpha", "2.1", "alpha-2.1.bin"));
    assert!(p.body.contains(&sha), "SHA-256 shown");
    assert!(p.body.contains("68.4 KiB"), "size shown");
}

#[actix_web::test]
async fn pages_show_the_signing_key_the_recipe_and_which_key_signed_each_release() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let (new, old) = (stack.key_id("new"), stack.key_id("old"));
    let new_text = std::fs::read_to_string(stack.public_key("new")).unwrap();
    let old_text = std::fs::read_to_string(stack.public_key("old")).unwrap();

    // The keys are served by the web (public, no sign-in), as minisign .pub files.
    let mut anon = Browser::new("10.1.9.9:5000");
    let k = anon.get(&app, "/keys/ffs.pub").await;
    assert_eq!(k.status, 200);
    assert_eq!(k.body, new_text, "ffs.pub is the current key");
    assert!(
        k.headers
            .get("content-disposition")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("ffs.pub")
    );
    assert_eq!(
        anon.get(&app, &format!("/keys/{new}.pub")).await.body,
        new_text
    );
    assert_eq!(
        anon.get(&app, &format!("/keys/{old}.pub")).await.body,
        old_text
    );
    assert_eq!(
        anon.get(&app, "/keys/0000000000000000.pub").await.status,
        404
    );
    assert_eq!(
        anon.get(&app, "/keys/..%2Fweb-session.key").await.status,
        404
    );

    let mut b = Browser::new("10.1.0.9:5000");
    b.login(&app, "alice", PASSWORD).await;
    let p = b.get(&app, "/products").await;
    assert!(p.body.contains("Verify your downloads"), "{}", p.body);
    // The public key's base64 line, its id, the link and the two-line recipe.
    let b64 = new_text.lines().nth(1).unwrap();
    assert!(p.body.contains(b64), "the key is shown");
    assert!(p.body.contains(&format!("href=\"/keys/{new}.pub\"")));
    assert!(
        p.body
            .contains("minisign -Vm SHA256SUMS -p ffs.pub\nsha256sum -c SHA256SUMS")
    );
    // Which key signed what: 2.1 the current key, 2.0 the older one.
    let at21 = p.body.find("alpha-2.1.bin").unwrap();
    let at20 = p.body.find("alpha-2.0.bin").unwrap();
    let signed_new = p
        .body
        .find(&format!(
            "Signed by key <a class=\"key-id\" href=\"/keys/{new}.pub\">{new}</a>"
        ))
        .expect("2.1 signed by the new key");
    let signed_old = p
        .body
        .find(&format!(
            "Signed by key <a class=\"key-id\" href=\"/keys/{old}.pub\">{old}</a>"
        ))
        .expect("2.0 signed by the old key");
    assert!(signed_new < at21 && at21 < signed_old && signed_old < at20);
    assert!(!p.body.contains("Unsigned"));

    // The prepared page of a signed release: SHA256SUMS and its signature are among the
    // links, with the key and the recipe.
    let csrf = b.csrf(&app).await;
    let r = b.prepare(&app, &csrf, "alpha", "2.1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let links = crate::common::hrefs(&r.body, "https://");
    assert!(
        links.iter().any(|l| l.ends_with("/SHA256SUMS")),
        "{links:?}"
    );
    assert!(
        links.iter().any(|l| l.ends_with("/SHA256SUMS.minisig")),
        "{links:?}"
    );
    assert!(r.body.contains(&format!(
        "Signed by key <code class=\"key-id\">{new}</code>"
    )));
    assert!(r.body.contains(b64));
    assert!(
        r.body
            .contains("minisign -Vm SHA256SUMS -p ffs.pub\nsha256sum -c SHA256SUMS")
    );
    assert!(r.body.contains(&format!("/keys/{new}.pub")));

    // An unsigned release says so, and is never called verified or signed.
    let mut bob = Browser::new("10.1.0.10:5000");
    bob.login(&app, "bob", PASSWORD).await;
    let p = bob.get(&app, "/products").await;
    assert!(p.body.contains("Unsigned"), "{}", p.body);
    assert!(!p.body.contains("Signed by"));
    let csrf = bob.csrf(&app).await;
    let r = bob.prepare(&app, &csrf, "beta", "1.0").await;
    assert!(r.body.contains("This release is unsigned"), "{}", r.body);
    assert!(
        !crate::common::hrefs(&r.body, "https://")
            .iter()
            .any(|l| l.contains("SHA256SUMS"))
    );
}

#[actix_web::test]
async fn a_release_whose_file_changed_size_is_refused_with_a_clear_page() {
    use std::os::unix::fs::PermissionsExt as _;
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.1.0.11:5000");
    b.login(&app, "alice", PASSWORD).await;
    let csrf = b.csrf(&app).await;
    // Someone with write access on the stager host appends to a published file.
    let repo = ftp_stager::Repository::open(&crate::common::stager_config(stack.path()).repository)
        .unwrap();
    let m = repo.manifest("alpha", "2.1").unwrap();
    let readme = m
        .files
        .iter()
        .find(|f| f.name == "docs/README.txt")
        .unwrap();
    let obj = repo.object_path(&readme.sha256).unwrap();
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&obj).unwrap();
    std::io::Write::write_all(&mut f, b"payload").unwrap();
    let r = b.prepare(&app, &csrf, "alpha", "2.1").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("Release unavailable"), "{}", r.body);
    assert!(r.body.contains("refused to hand them out"), "{}", r.body);
    assert!(!r.body.contains("ftp://"));
    // Other releases (2.0 shares the .bin, not the README) are unaffected.
    assert_eq!(b.prepare(&app, &csrf, "alpha", "2.0").await.status, 200);
}

#[actix_web::test]
async fn admin_catalog_lists_recent_publishes_with_who_when_size_and_signer() {
    let stack = Stack::start().await;
    // A later publish (an hour from now, so it is unambiguously the newest).
    let repo = ftp_stager::Repository::open(&crate::common::stager_config(stack.path()).repository)
        .unwrap();
    let mut m = repo.manifest("beta", "1.0").unwrap();
    m.version = "9.9".into();
    m.published_at += chrono::Duration::hours(1);
    m.published_by = "local user builder".into();
    repo.write_manifest(&m).unwrap();
    // And one that `ffs repo verify --quarantine` withdrew.
    let mut q = repo.manifest("alpha", "1.0").unwrap();
    q.yanked = true;
    q.quarantined = Some("2026-11-27 01:00 UTC: alpha-1.0.bin: content hashes to 00".into());
    repo.write_manifest(&q).unwrap();
    let app = app!(stack);
    let mut root = Browser::new("10.1.0.12:5000");
    root.login(&app, "root", PASSWORD).await;
    let cat = root.get(&app, "/admin/catalog").await;
    assert_eq!(cat.status, 200);
    let start = cat
        .body
        .find("<table id=\"recent-publishes\">")
        .expect("recent publishes");
    let end = start + cat.body[start..].find("</table>").unwrap();
    let recent = &cat.body[start..end];
    let rows: Vec<&str> = recent.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 6, "{recent}");
    assert!(
        rows[0].contains("beta 9.9") && rows[0].contains("local user builder"),
        "{}",
        rows[0]
    );
    let row = |rel: &str| *rows.iter().find(|r| r.contains(rel)).unwrap();
    assert!(row("alpha 2.1").contains(&stack.key_id("new")));
    assert!(row("alpha 2.0").contains(&stack.key_id("old")));
    assert!(row("alpha 3.0").contains("unsigned"));
    assert!(
        row("alpha 2.1").contains("68.4 KiB"),
        "{}",
        row("alpha 2.1")
    );
    assert!(row("alpha 2.1").contains("local user "), "who published it");
    assert!(
        cat.body.contains(
            "<span class=\"badge bad\" title=\"2026-11-27 01:00 UTC: alpha-1.0.bin: content hashes to 00\">quarantined</span>"
        ),
        "{}",
        cat.body
    );
    // Customers do not get the page.
    let mut alice = Browser::new("10.1.0.13:5000");
    alice.login(&app, "alice", PASSWORD).await;
    assert_ne!(alice.get(&app, "/admin/catalog").await.status, 200);
}

#[actix_web::test]
async fn wrong_password_and_unknown_login_get_the_same_answer() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.1.0.2:5000");
    let wrong = b.login(&app, "alice", "not the password").await;
    let unknown = b.login(&app, "nobody", "not the password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert!(wrong.body.contains("Wrong login or password."));
    assert!(unknown.body.contains("Wrong login or password."));
    assert!(
        !wrong.body.contains("not the password"),
        "password never echoed"
    );
    assert_eq!(b.get(&app, "/products").await.location(), "/login");
}

#[actix_web::test]
async fn agent_lockout_is_shown_even_with_the_right_password() {
    let stack = Stack::start().await;
    let app = app!(stack);
    // Different addresses, so the web's own throttle is not what stops them.
    for i in 0..3 {
        let mut b = Browser::new(&format!("10.2.0.{i}:5000"));
        assert_eq!(b.login(&app, "bob", "wrong password!").await.status, 401);
    }
    let mut b = Browser::new("10.2.1.1:5000");
    let r = b.login(&app, "bob", PASSWORD).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("temporarily locked"));
    assert_eq!(b.get(&app, "/products").await.location(), "/login");
}

#[actix_web::test]
async fn per_address_throttle_stops_a_spray_across_logins() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.3.0.1:5000");
    for i in 0..5 {
        let r = b.login(&app, &format!("user{i}"), "wrong password!").await;
        assert_eq!(r.status, 401);
    }
    let r = b.login(&app, "alice", PASSWORD).await;
    assert_eq!(r.status, 429, "throttled before asking the agent");
    assert!(r.headers.get("retry-after").is_some());
    let mut other = Browser::new("10.3.0.2:5000");
    assert_eq!(other.login(&app, "alice", PASSWORD).await.status, 303);
}

#[actix_web::test]
async fn a_success_does_not_clear_the_address_failure_count() {
    // A sprayer with one valid account of their own must not reset the count by signing in
    // with it between guesses.
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.3.1.1:5000");
    for i in 0..4 {
        let r = b.login(&app, &format!("user{i}"), "wrong password!").await;
        assert_eq!(r.status, 401);
    }
    let mut own = Browser::new("10.3.1.1:5001");
    assert_eq!(own.login(&app, "alice", PASSWORD).await.status, 303);
    assert_eq!(b.login(&app, "user4", "wrong password!").await.status, 401);
    let r = b.login(&app, "user5", "wrong password!").await;
    assert_eq!(
        r.status, 429,
        "the fifth failure from the address counts: {}",
        r.body
    );
}

#[actix_web::test]
async fn forms_without_a_valid_csrf_token_are_refused() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.4.0.1:5000");
    b.get(&app, "/login").await;
    let r = b
        .post(
            &app,
            "/login",
            &[("login", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 403);
    let r = b
        .post(
            &app,
            "/login",
            &[("csrf", "0000"), ("login", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(b.login(&app, "alice", PASSWORD).await.status, 303);
    let good = b.csrf(&app).await;
    let bad = "f".repeat(good.len());
    let r = b.prepare(&app, &bad, "alpha", "2.1").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Form expired"));
    let r = b.post(&app, "/logout", &[("csrf", &bad)]).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        b.get(&app, "/products").await.status,
        200,
        "still signed in"
    );
    // A token from another session does not work either.
    let mut other = Browser::new("10.4.0.2:5000");
    other.login(&app, "bob", PASSWORD).await;
    let theirs = other.csrf(&app).await;
    let r = b.prepare(&app, &theirs, "alpha", "2.1").await;
    assert_eq!(r.status, 403);
}

#[actix_web::test]
async fn edited_forms_never_stage_what_the_customer_is_not_entitled_to() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.5.0.1:5000");
    b.login(&app, "alice", PASSWORD).await;
    let csrf = b.csrf(&app).await;
    for (product, version) in [
        ("beta", "1.0"),
        ("alpha", "1.0"),
        ("alpha", "3.0"),
        ("alpha", "9.9"),
        ("gamma", "1.0"),
    ] {
        let r = b
            .post(
                &app,
                "/prepare",
                &[("csrf", &csrf), ("product", product), ("version", version)],
            )
            .await;
        assert_eq!(r.status, 404, "{product} {version}: {}", r.body);
        assert!(!r.body.contains("ftp://"));
    }
    // Entitled release, but a file name edited to reach elsewhere.
    for file in ["../../beta/1.0/beta-1.0.bin", "beta-1.0.bin", "/etc/passwd"] {
        let r = b
            .post(
                &app,
                "/prepare",
                &[
                    ("csrf", &csrf),
                    ("product", "alpha"),
                    ("version", "2.1"),
                    ("file", file),
                ],
            )
            .await;
        assert!(
            r.status == 400 || r.status == 404,
            "{file}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.body.contains("ftp://"));
    }
    // Nothing was staged by any of that.
    let mut admin = Browser::new("10.5.0.9:5000");
    admin.login(&app, "root", PASSWORD).await;
    let areas = admin.get(&app, "/admin/areas").await;
    assert!(
        areas.body.contains("No active download areas"),
        "{}",
        areas.body
    );
    // Bob, by URL, does not see alpha.
    let mut bob = Browser::new("10.5.0.2:5000");
    bob.login(&app, "bob", PASSWORD).await;
    let p = bob.get(&app, "/products").await;
    assert!(p.body.contains("beta-1.0.bin"));
    assert!(!p.body.contains("alpha-"));
}

#[actix_web::test]
async fn prepare_download_stages_records_and_shows_links() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.6.0.1:5000");
    b.login(&app, "alice", PASSWORD).await;
    let csrf = b.csrf(&app).await;
    let r = b.prepare(&app, &csrf, "alpha", "2.1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("ftp://"));
    let links = crate::common::hrefs(&r.body, "https://");
    assert!(
        links.iter().any(|l| l.ends_with("/alpha-2.1.bin")),
        "{links:?}"
    );
    assert!(links.iter().any(|l| l.ends_with("/docs/README.txt")));
    assert!(r.body.contains("sha256sum -c"));
    let sha = crate::common::sha256_hex(stack.file("alpha", "2.1", "alpha-2.1.bin"));
    assert!(r.body.contains(&sha));
    assert!(r.body.contains("curl -fSL"));
    // Only chosen files.
    let r = b
        .post(
            &app,
            "/prepare",
            &[
                ("csrf", &csrf),
                ("product", "alpha"),
                ("version", "2.0"),
                ("file", "docs/README.txt"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let links = crate::common::hrefs(&r.body, "https://");
    assert!(links.iter().any(|l| l.ends_with("/docs/README.txt")));
    assert!(!links.iter().any(|l| l.ends_with(".bin")), "{links:?}");
    // History, with re-prepare.
    let h = b.get(&app, "/downloads").await;
    assert_eq!(h.status, 200);
    assert!(h.body.contains("alpha 2.1"));
    assert!(h.body.contains("alpha 2.0"));
    assert!(h.body.contains("Prepare again"));
    // Re-prepare from the history form works.
    let r = b.prepare(&app, &csrf, "alpha", "2.0").await;
    assert_eq!(r.status, 200);
    // Bob's history does not show Alice's downloads.
    let mut bob = Browser::new("10.6.0.2:5000");
    bob.login(&app, "bob", PASSWORD).await;
    let h = bob.get(&app, "/downloads").await;
    assert!(!h.body.contains("alpha"));
}

#[actix_web::test]
async fn admin_pages_work_for_admins_and_are_refused_to_customers() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut alice = Browser::new("10.7.0.1:5000");
    alice.login(&app, "alice", PASSWORD).await;
    let csrf = alice.csrf(&app).await;
    let r = alice.prepare(&app, &csrf, "alpha", "2.1").await;
    assert_eq!(r.status, 200);
    for path in [
        "/admin",
        "/admin/catalog",
        "/admin/areas",
        "/admin/history",
        "/admin/customers",
        "/admin/customers/bob",
    ] {
        let r = alice.get(&app, path).await;
        assert_eq!(r.status, 403, "{path}");
        assert!(!r.body.contains("bob@example.com"));
    }
    assert!(!alice.get(&app, "/products").await.body.contains(">Admin<"));

    let mut root = Browser::new("10.7.0.2:5000");
    root.login(&app, "root", PASSWORD).await;
    let idx = root.get(&app, "/admin").await;
    assert_eq!(idx.status, 200);
    assert!(idx.body.contains("Staging latency"));
    assert!(
        idx.body.contains("hardlink") || idx.body.contains("hard"),
        "{}",
        idx.body
    );
    let cat = root.get(&app, "/admin/catalog").await;
    assert!(cat.body.contains("alpha") && cat.body.contains("beta") && cat.body.contains("3.0"));
    // The admin sub-navigation marks the page you are on, and only that one.
    assert!(
        cat.body
            .contains("<a href=\"/admin/catalog\" aria-current=\"page\">Catalog</a>"),
        "{}",
        cat.body
    );
    assert_eq!(cat.body.matches("aria-current=\"page\"").count(), 1);
    assert!(
        cat.body
            .contains("<a href=\"/admin\" aria-current=\"true\">Admin</a>")
    );
    let cust = root.get(&app, "/admin/customers").await;
    assert!(cust.body.contains("bob@example.com"));
    let one = root.get(&app, "/admin/customers/alice").await;
    assert!(
        crate::common::unescape(&one.body).contains(">=2.0, <3"),
        "{}",
        one.body
    );
    assert!(one.body.contains("alpha 2.1"), "history of alice");
    assert_eq!(root.get(&app, "/admin/customers/nobody").await.status, 404);
    let hist = root.get(&app, "/admin/history").await;
    assert!(hist.body.contains("alice") && hist.body.contains("alpha 2.1"));
    let areas = root.get(&app, "/admin/areas").await;
    assert!(areas.body.contains("alice"));
    let area_id = input_value(&areas.body, "area_id").unwrap();
    // A customer cannot revoke, even with a valid token of their own.
    let r = alice
        .post(
            &app,
            "/admin/areas/revoke",
            &[("csrf", &csrf), ("area_id", &area_id)],
        )
        .await;
    assert_eq!(r.status, 403);
    let rcsrf = input_value(&areas.body, "csrf").unwrap();
    let r = root
        .post(
            &app,
            "/admin/areas/revoke",
            &[("csrf", &rcsrf), ("area_id", &area_id)],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), "/admin/areas");
    let areas = root.get(&app, "/admin/areas").await;
    assert!(areas.body.contains("was revoked"));
    assert!(!areas.body.contains(&area_id));
}

#[actix_web::test]
async fn logout_kills_the_session_even_for_a_copied_cookie() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.8.0.1:5000");
    b.login(&app, "alice", PASSWORD).await;
    let copy = b.clone();
    let csrf = b.csrf(&app).await;
    let r = b.post(&app, "/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), "/login");
    assert_eq!(b.get(&app, "/products").await.location(), "/login");
    let mut replay = copy;
    let r = replay.get(&app, "/products").await;
    assert_eq!(r.status, 303, "a cookie copied before logout is dead");
    assert_eq!(r.location(), "/login");
}

#[actix_web::test]
async fn session_idle_timeout_ends_the_session() {
    let stack = Stack::start().await;
    let mut cfg = stack.web_config();
    cfg.session_idle_secs = 1;
    let app = app!(stack, cfg);
    let mut b = Browser::new("10.8.1.1:5000");
    b.login(&app, "alice", PASSWORD).await;
    assert_eq!(b.get(&app, "/products").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(b.get(&app, "/products").await.location(), "/login");
}

#[actix_web::test]
async fn session_absolute_timeout_ends_even_a_busy_session() {
    let stack = Stack::start().await;
    let mut cfg = stack.web_config();
    cfg.session_absolute_secs = 2;
    let app = app!(stack, cfg);
    let mut b = Browser::new("10.8.2.1:5000");
    b.login(&app, "alice", PASSWORD).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(b.get(&app, "/products").await.status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(b.get(&app, "/products").await.location(), "/login");
}

#[actix_web::test]
async fn login_rotates_the_session_cookie() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.8.3.1:5000");
    b.get(&app, "/login").await;
    let before = b.jar.get("ffs_session").cloned().unwrap();
    b.login(&app, "alice", PASSWORD).await;
    let after = b.jar.get("ffs_session").cloned().unwrap();
    assert_ne!(before, after);
    // The pre-login cookie (e.g. one planted by an attacker) is not signed in.
    let mut fixated = Browser::new("10.8.3.2:5000");
    fixated.jar.insert("ffs_session".into(), before);
    assert_eq!(fixated.get(&app, "/products").await.location(), "/login");
}

#[actix_web::test]
async fn security_headers_and_cookie_flags() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.9.0.1:5000");
    let r = b.get(&app, "/login").await;
    let h = |n: &str| r.headers.get(n).unwrap().to_str().unwrap().to_string();
    let csp = h("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert!(csp.contains("default-src 'none'"));
    assert!(h("strict-transport-security").starts_with("max-age="));
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("x-frame-options"), "DENY");
    let cookie = h("set-cookie");
    assert!(cookie.starts_with("ffs_session="));
    for flag in ["Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!r.body.contains("<script"), "no JavaScript");
    let css = b.get(&app, "/static/style.css").await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(b.get(&app, "/no/such/page").await.status, 404);
}

#[actix_web::test]
async fn agent_down_gives_a_fast_503_and_recovers() {
    let mut stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.10.0.1:5000");
    b.login(&app, "alice", PASSWORD).await;
    assert_eq!(b.get(&app, "/products").await.status, 200);
    stack.stop_agent();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    let r = b.get(&app, "/products").await;
    let took = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("Temporarily unavailable"));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let mut fresh = Browser::new("10.10.0.2:5000");
    let r = fresh.login(&app, "alice", PASSWORD).await;
    assert_eq!(r.status, 503);
    let ready = fresh.get(&app, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("agent: down"));
    stack.restart_agent().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = b.get(&app, "/products").await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {}", r.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(fresh.login(&app, "alice", PASSWORD).await.status, 303);
}

#[actix_web::test]
async fn stager_down_keeps_the_catalog_and_explains_why_prepare_fails() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.11.0.1:5000");
    b.login(&app, "alice", PASSWORD).await;
    assert_eq!(b.get(&app, "/products").await.status, 200);
    stack.stop_stager();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = b.get(&app, "/products").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("download service is unreachable"));
    assert!(p.body.contains("alpha-2.1.bin"), "last catalog still shown");
    assert!(p.body.contains("disabled"));
    let csrf = b.csrf(&app).await;
    let r = b.prepare(&app, &csrf, "alpha", "2.1").await;
    assert_eq!(r.status, 503);
    assert!(
        r.body.contains("download service cannot be reached"),
        "{}",
        r.body
    );
}

#[actix_web::test]
async fn health_ready_and_metrics() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.12.0.1:5000");
    assert_eq!(b.get(&app, "/healthz").await.status, 200);
    // Links come up on first use.
    b.login(&app, "alice", PASSWORD).await;
    b.get(&app, "/products").await;
    let r = b.get(&app, "/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let csrf = b.csrf(&app).await;
    b.prepare(&app, &csrf, "alpha", "2.1").await;
    let m = b.get(&app, "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains(
            "ffs_web_requests_total{method=\"GET\",route=\"/products\",status=\"200\"} 1"
        ),
        "{}",
        m.body
    );
    assert!(
        m.body.contains(
            "ffs_web_backend_duration_seconds_count{peer=\"stager\",op=\"stager.stage\"} 1"
        )
    );
    assert!(m.body.contains("ffs_web_link_up{peer=\"agent\"} 1"));
    assert!(m.body.contains("ffs_web_link_up{peer=\"stager\"} 1"));
}

#[actix_web::test]
async fn admin_edits_go_through_the_agent_and_are_refused_to_customers() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut alice = Browser::new("10.13.0.1:5000");
    alice.login(&app, "alice", PASSWORD).await;
    let acsrf = alice.csrf(&app).await;
    let r = alice
        .post(
            &app,
            "/admin/customers/alice/entitle",
            &[("csrf", &acsrf), ("product", "beta"), ("versions", "*")],
        )
        .await;
    assert_eq!(r.status, 403, "a customer cannot entitle themself");
    assert!(
        !alice
            .get(&app, "/products")
            .await
            .body
            .contains("beta-1.0.bin")
    );

    let mut root = Browser::new("10.13.0.2:5000");
    root.login(&app, "root", PASSWORD).await;
    let page = root.get(&app, "/admin/customers/alice").await;
    let csrf = input_value(&page.body, "csrf").unwrap();
    let r = root
        .post(
            &app,
            "/admin/customers/alice/entitle",
            &[("product", "beta"), ("versions", "*")],
        )
        .await;
    assert_eq!(r.status, 403, "no CSRF token");
    let r = root
        .post(
            &app,
            "/admin/customers/alice/entitle",
            &[
                ("csrf", &csrf),
                ("product", "beta"),
                ("versions", ">=1.0"),
                ("until", "2099-12-31"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = root.get(&app, r.location()).await;
    assert!(page.body.contains("entitled to beta"), "{}", page.body);
    assert!(
        alice
            .get(&app, "/products")
            .await
            .body
            .contains("beta-1.0.bin")
    );
    let r = root
        .post(
            &app,
            "/admin/customers/alice/entitle",
            &[
                ("csrf", &csrf),
                ("product", "beta"),
                ("versions", ">=<nonsense"),
            ],
        )
        .await;
    let page = root.get(&app, r.location()).await;
    assert!(page.body.contains("not changed"), "{}", page.body);
    let r = root
        .post(
            &app,
            "/admin/customers/alice/unentitle",
            &[("csrf", &csrf), ("product", "beta")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(
        !alice
            .get(&app, "/products")
            .await
            .body
            .contains("beta-1.0.bin")
    );
    // Disable: the next sign-in fails with the generic message; enable restores it.
    let r = root
        .post(&app, "/admin/customers/alice/disable", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    let mut again = Browser::new("10.13.0.3:5000");
    assert_eq!(again.login(&app, "alice", PASSWORD).await.status, 401);
    root.post(&app, "/admin/customers/alice/enable", &[("csrf", &csrf)])
        .await;
    assert_eq!(again.login(&app, "alice", PASSWORD).await.status, 303);
    let r = root
        .post(&app, "/admin/customers/alice/explode", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 404);
}

#[actix_web::test]
async fn admin_notices_come_from_the_session_never_from_the_url() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut root = Browser::new("10.13.1.1:5000");
    root.login(&app, "root", PASSWORD).await;
    // An attacker-built link: no notice, whatever its query says.
    let spoof = "Call 555-0100 to re-validate your admin account";
    for url in [
        format!("/admin/customers/alice?done={}", spoof.replace(' ', "%20")),
        "/admin/areas?revoked=1".to_string(),
        "/admin/areas?revoked=0".to_string(),
    ] {
        let page = root.get(&app, &url).await;
        assert_eq!(page.status, 200, "{url}");
        assert!(
            !page.body.contains("class=\"notice\""),
            "{url}: {}",
            page.body
        );
        assert!(!page.body.contains("555-0100"), "{url}");
    }
    // A real edit's notice is shown once, on the page it redirects to.
    let page = root.get(&app, "/admin/customers/alice").await;
    let csrf = input_value(&page.body, "csrf").unwrap();
    let r = root
        .post(
            &app,
            "/admin/customers/alice/entitle",
            &[("csrf", &csrf), ("product", "beta"), ("versions", "*")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/admin/customers/alice", "nothing in the URL");
    let page = root.get(&app, r.location()).await;
    assert!(page.body.contains("entitled to beta"), "{}", page.body);
    let again = root.get(&app, r.location()).await;
    assert!(!again.body.contains("entitled to beta"), "shown once");
    // Another session (or a copied URL) never sees it.
    let mut other = Browser::new("10.13.1.2:5000");
    other.login(&app, "root", PASSWORD).await;
    let r = root
        .post(&app, "/admin/customers/alice/disable", &[("csrf", &csrf)])
        .await;
    let page = other.get(&app, r.location()).await;
    assert!(!page.body.contains("class=\"notice\""), "{}", page.body);
}

#[actix_web::test]
async fn admin_disable_ends_the_customers_sessions_and_revokes_their_areas() {
    let stack = Stack::start().await;
    let (state, key) = web_frontend::startup::build_state(
        stack.web_config(),
        stack.agent_client(),
        stack.stager_client(),
    )
    .unwrap();
    let app = test::init_service(web_frontend::startup::app(state.clone(), key)).await;
    let mut revoker =
        web_frontend::revocations::Revoker::new(state.clone(), std::time::Duration::from_secs(1));
    let mut alice = Browser::new("10.14.0.1:5000");
    alice.login(&app, "alice", PASSWORD).await;
    let csrf = alice.csrf(&app).await;
    assert_eq!(alice.prepare(&app, &csrf, "alpha", "2.1").await.status, 200);
    let mut bob = Browser::new("10.14.0.2:5000");
    bob.login(&app, "bob", PASSWORD).await;
    let bcsrf = bob.csrf(&app).await;
    assert_eq!(bob.prepare(&app, &bcsrf, "beta", "1.0").await.status, 200);
    let labels = || async {
        let areas = state.backend.areas().await.unwrap();
        let mut v: Vec<String> = areas.into_iter().map(|a| a.1.label).collect();
        v.sort();
        v
    };
    assert_eq!(labels().await, ["alice", "bob"]);
    revoker.poll_once().await.unwrap();
    assert_eq!(labels().await, ["alice", "bob"], "nothing to revoke yet");

    let mut root = Browser::new("10.14.0.3:5000");
    root.login(&app, "root", PASSWORD).await;
    let page = root.get(&app, "/admin/customers/alice").await;
    let rcsrf = input_value(&page.body, "csrf").unwrap();
    let r = root
        .post(&app, "/admin/customers/alice/disable", &[("csrf", &rcsrf)])
        .await;
    assert_eq!(r.status, 303);
    let notice = root.get(&app, r.location()).await;
    assert!(
        notice.body.contains("download areas are revoked"),
        "{}",
        notice.body
    );
    assert_eq!(
        alice.get(&app, "/products").await.status,
        200,
        "not polled yet"
    );
    assert_eq!(revoker.poll_once().await.unwrap(), 1, "alice's one area");
    assert_eq!(labels().await, ["bob"]);
    assert_eq!(alice.get(&app, "/products").await.location(), "/login");
    assert_eq!(bob.get(&app, "/products").await.status, 200, "others go on");
    // Enabled again, alice signs in afresh and keeps what she stages now, even when a
    // restarted web frontend replays the feed from the start.
    root.post(&app, "/admin/customers/alice/enable", &[("csrf", &rcsrf)])
        .await;
    let mut again = Browser::new("10.14.0.4:5000");
    again.login(&app, "alice", PASSWORD).await;
    let csrf = again.csrf(&app).await;
    assert_eq!(again.prepare(&app, &csrf, "alpha", "2.0").await.status, 200);
    let mut replay =
        web_frontend::revocations::Revoker::new(state.clone(), std::time::Duration::from_secs(1));
    assert_eq!(replay.poll_once().await.unwrap(), 0);
    assert_eq!(labels().await, ["alice", "bob"]);
    assert_eq!(again.get(&app, "/products").await.status, 200);
}

#[actix_web::test]
async fn admin_unentitle_can_also_revoke_the_products_staged_areas() {
    let stack = Stack::start().await;
    let (state, key) = web_frontend::startup::build_state(
        stack.web_config(),
        stack.agent_client(),
        stack.stager_client(),
    )
    .unwrap();
    let app = test::init_service(web_frontend::startup::app(state.clone(), key)).await;
    let mut revoker =
        web_frontend::revocations::Revoker::new(state.clone(), std::time::Duration::from_secs(1));
    let jar = stack.path().join("jar-revoke");
    // The HTTPS link to the product's file on a prepared page, and its status now.
    let link = |page: &str, name: &str| {
        crate::common::hrefs(page, "https://")
            .into_iter()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("no link to {name}: {page}"))
    };
    let mut alice = Browser::new("10.15.0.1:5000");
    alice.login(&app, "alice", PASSWORD).await;
    let csrf = alice.csrf(&app).await;
    let page = alice.prepare(&app, &csrf, "alpha", "2.1").await;
    assert_eq!(page.status, 200);
    let alpha = link(&page.body, "/alpha-2.1.bin");
    let mut bob = Browser::new("10.15.0.2:5000");
    bob.login(&app, "bob", PASSWORD).await;
    let bcsrf = bob.csrf(&app).await;
    let page = bob.prepare(&app, &bcsrf, "beta", "1.0").await;
    let beta = link(&page.body, "/beta-1.0.bin");
    assert_eq!(crate::https::curl(&jar, &[&alpha]).await.0, 200);
    assert_eq!(crate::https::curl(&jar, &[&beta]).await.0, 200);

    let mut root = Browser::new("10.15.0.3:5000");
    root.login(&app, "root", PASSWORD).await;
    let page = root.get(&app, "/admin/customers/alice").await;
    assert!(
        page.body.contains("name=\"revoke\"") && page.body.contains("also revoke staged areas"),
        "the unentitle form offers the option: {}",
        page.body
    );
    let rcsrf = input_value(&page.body, "csrf").unwrap();
    // Without the CSRF token nothing happens.
    let r = root
        .post(
            &app,
            "/admin/customers/alice/unentitle",
            &[("product", "alpha"), ("revoke", "1")],
        )
        .await;
    assert_eq!(r.status, 403);
    // A plain unentitle (bob, beta) leaves the staged area serving.
    let r = root
        .post(
            &app,
            "/admin/customers/bob/unentitle",
            &[("csrf", &rcsrf), ("product", "beta")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(revoker.poll_once().await.unwrap(), 0, "nothing to revoke");
    assert_eq!(crate::https::curl(&jar, &[&beta]).await.0, 200);
    assert_eq!(crate::https::curl(&jar, &[&alpha]).await.0, 200);
    // With the box ticked: the entitlement goes and, once the feed is polled, the area.
    let r = root
        .post(
            &app,
            "/admin/customers/alice/unentitle",
            &[("csrf", &rcsrf), ("product", "alpha"), ("revoke", "1")],
        )
        .await;
    assert_eq!(r.status, 303);
    let notice = root.get(&app, r.location()).await;
    assert!(
        notice.body.contains("1 entitlement to alpha removed")
            && notice.body.contains("staged areas of it are revoked"),
        "{}",
        notice.body
    );
    assert!(
        !alice
            .get(&app, "/products")
            .await
            .body
            .contains("alpha-2.1.bin")
    );
    assert_eq!(revoker.poll_once().await.unwrap(), 1, "alice's alpha area");
    assert_eq!(
        crate::https::curl(&jar, &[&alpha]).await.0,
        404,
        "the revoked area's link stops working"
    );
    assert_eq!(
        crate::https::curl(&jar, &[&beta]).await.0,
        200,
        "others go on"
    );
    assert_eq!(
        alice.get(&app, "/products").await.status,
        200,
        "alice stays signed in"
    );
}

/// A writer that appends to a shared buffer (for the log test).
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_web::test]
async fn passwords_never_reach_the_log() {
    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut b = Browser::new("10.14.0.1:5000");
    let wrong = "Tr0ub4dor&3-wrong";
    assert_eq!(b.login(&app, "alice", wrong).await.status, 401);
    assert_eq!(b.login(&app, "alice", PASSWORD).await.status, 303);
    let csrf = b.csrf(&app).await;
    let r = b.prepare(&app, &csrf, "alpha", "2.1").await;
    assert_eq!(r.status, 200);
    let ftp_password = crate::common::unescape(
        r.body
            .split("<code id=\"ftp-password\">")
            .nth(1)
            .and_then(|s| s.split("</code>").next())
            .unwrap(),
    );
    let log = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    assert!(log.contains("signed in"), "the log is captured: {log}");
    assert!(log.contains("download prepared"));
    for secret in [PASSWORD, wrong, ftp_password.as_str()] {
        assert!(!log.contains(secret), "{secret:?} appears in the log");
    }
}

/// Issue 12: an admin yanks a release from the catalog page (through the stager link, with
/// CSRF); the customer entitled to it no longer sees it nor can prepare it.
#[actix_web::test]
async fn admin_yanks_a_release_and_customers_lose_it() {
    let stack = Stack::start().await;
    let app = app!(stack);
    let mut alice = Browser::new("10.16.0.1:5000");
    alice.login(&app, "alice", PASSWORD).await;
    let csrf = alice.csrf(&app).await;
    assert!(
        alice
            .get(&app, "/products")
            .await
            .body
            .contains("alpha-2.1.bin")
    );
    let mut root = Browser::new("10.16.0.2:5000");
    root.login(&app, "root", PASSWORD).await;
    let cat = root.get(&app, "/admin/catalog").await;
    assert_eq!(cat.status, 200);
    assert!(
        cat.body.contains("action=\"/admin/catalog/yank\""),
        "a Yank form: {}",
        cat.body
    );
    assert!(cat.body.contains("Yank alpha 2.1?"), "confirmation text");
    assert!(!cat.body.contains(">yanked<"), "nothing yanked yet");
    let rcsrf = input_value(&cat.body, "csrf").unwrap();
    let yank = |c: &str| {
        [
            ("csrf", c.to_string()),
            ("product", "alpha".into()),
            ("version", "2.1".into()),
        ]
    };

    // A customer is refused, even with a valid token of their own.
    let f = yank(&csrf);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        alice.post(&app, "/admin/catalog/yank", &f).await.status,
        403
    );
    // The admin without a (valid) CSRF token is refused.
    let r = root
        .post(
            &app,
            "/admin/catalog/yank",
            &[("product", "alpha"), ("version", "2.1")],
        )
        .await;
    assert_eq!(r.status, 403);
    let f = yank("0000");
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(root.post(&app, "/admin/catalog/yank", &f).await.status, 403);
    // Neither yanked anything.
    assert!(
        !root
            .get(&app, "/admin/catalog")
            .await
            .body
            .contains(">yanked<")
    );
    assert!(
        alice
            .get(&app, "/products")
            .await
            .body
            .contains("alpha-2.1.bin")
    );

    // The admin yanks it.
    let f = yank(&rcsrf);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = root.post(&app, "/admin/catalog/yank", &f).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/admin/catalog");
    let cat = root.get(&app, "/admin/catalog").await;
    assert!(cat.body.contains("alpha 2.1 was yanked"), "{}", cat.body);
    assert_eq!(cat.body.matches(">yanked<").count(), 1, "{}", cat.body);
    assert!(
        !cat.body.contains("Yank alpha 2.1?"),
        "no Yank button any more"
    );
    assert!(cat.body.contains("Yank alpha 2.0?"), "others keep theirs");
    // Yanking again says so.
    let r = root.post(&app, "/admin/catalog/yank", &f).await;
    assert_eq!(r.status, 303);
    let cat = root.get(&app, "/admin/catalog").await;
    assert!(
        cat.body.contains("alpha 2.1 was already yanked"),
        "{}",
        cat.body
    );
    // An unknown release is not found.
    let r = root
        .post(
            &app,
            "/admin/catalog/yank",
            &[("csrf", &rcsrf), ("product", "alpha"), ("version", "9.9")],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Alice no longer sees it nor can prepare it; 2.0 still works.
    let p = alice.get(&app, "/products").await;
    assert!(!p.body.contains("alpha-2.1.bin"), "{}", p.body);
    assert!(p.body.contains("alpha-2.0.bin"));
    let r = alice.prepare(&app, &csrf, "alpha", "2.1").await;
    assert_ne!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("ftp://"));
    assert_eq!(alice.prepare(&app, &csrf, "alpha", "2.0").await.status, 200);
}
