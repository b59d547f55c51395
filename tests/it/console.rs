//! The operator console over plain HTTP: signing in and out, the throttle, CSRF and
//! same-origin checks, what a viewer may not do, sessions ended by a removal or a lowered
//! role, escaping, and the preview's policy. The journeys in a real browser are in
//! `console_browser.rs`.

use herald::clock::Clock as _;
use herald::domain::operator::hash_password;
use herald::domain::states::{OperatorRole, ProjectRole};
use herald::store::{Backend, OperatorRecord, Store};
use reqwest::StatusCode;
use reqwest::redirect::Policy;

use crate::helpers::{TestApp, email_to};

pub const PASSWORD: &str = "correct horse battery";

/// Adds an operator with [`PASSWORD`]; a member gets `grant` in project "alpha".
pub async fn operator(app: &TestApp, email: &str, role: OperatorRole, grant: Option<ProjectRole>) {
    let store: &Store = &app.store;
    store
        .create_operator(&OperatorRecord {
            id: uuid::Uuid::now_v7().to_string(),
            email: email.to_owned(),
            password_hash: hash_password(PASSWORD).expect("hash"),
            role,
            created_at: app.clock.now_ms(),
        })
        .await
        .expect("create operator");
    if let Some(g) = grant {
        store
            .grant_operator(email, &alpha(app).await, Some(g))
            .await
            .expect("grant");
    }
}

/// Project "alpha"'s id (the test app's key's project).
pub async fn alpha(app: &TestApp) -> String {
    app.store
        .list_projects()
        .await
        .expect("projects")
        .into_iter()
        .find(|p| p.name == "alpha")
        .expect("alpha")
        .id
}

/// A browser without a browser: keeps the session cookie, follows nothing.
pub struct Client {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Client {
    pub fn new(app: &TestApp) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .expect("client"),
            base: app.base.clone(),
            cookie: None,
        }
    }

    /// Signs in as a browser does: the form's page first (its CSRF token and cookie), then
    /// the form.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> reqwest::Response {
        let (cookie, token) = self.sign_in_form().await;
        let r = self
            .http
            .post(format!("{}/sign-in", self.base))
            .header("cookie", cookie)
            .form(&[
                ("email", email),
                ("password", password),
                ("next", "/"),
                ("csrf", &token),
            ])
            .send()
            .await
            .expect("sign in");
        for c in r.headers().get_all("set-cookie") {
            let c = c.to_str().expect("ascii");
            if c.starts_with("herald_session=") {
                self.cookie = c.split(';').next().map(str::to_owned);
            }
        }
        r
    }

    /// The sign-in page's cookie (`name=value`) and the token its form carries.
    pub async fn sign_in_form(&self) -> (String, String) {
        let r = self
            .http
            .get(format!("{}/sign-in", self.base))
            .send()
            .await
            .expect("sign-in page");
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("cookie")
            .to_owned();
        let body = r.text().await.expect("body");
        let at = body.find("name=\"csrf\" value=\"").expect("a token") + 19;
        (cookie, body.get(at..at + 43).expect("token").to_owned())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String, reqwest::header::HeaderMap) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.expect("get");
        let (status, headers) = (r.status(), r.headers().clone());
        (status, r.text().await.expect("body"), headers)
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .form(form)
            .header("sec-fetch-site", "same-origin");
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.expect("post");
        let status = r.status();
        (status, r.text().await.expect("body"))
    }

    /// The CSRF token the pages' forms carry.
    pub async fn csrf(&self, path: &str) -> String {
        let (_, body, _) = self.get(path).await;
        let at = body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a token")
            + 19;
        body.get(at..at + 43).expect("token").to_owned()
    }
}

#[tokio::test]
async fn signing_in_throttles_guessing_and_signs_out() {
    let app = TestApp::spawn(Backend::Sqlite, None).await;
    operator(&app, "admin@example.com", OperatorRole::Admin, None).await;
    let p = alpha(&app).await;
    let mut c = Client::new(&app);
    // Not signed in: to the sign-in page, and back after.
    let (s, _, h) = c.get(&format!("/projects/{p}/emails")).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        h["location"],
        format!("/sign-in?next=%2Fprojects%2F{p}%2Femails").as_str()
    );
    // A sign-in without the form's token (a form posted from elsewhere) is refused.
    let forged = c
        .http
        .post(format!("{}/sign-in", c.base))
        .form(&[("email", "admin@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .expect("post");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        !forged
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.starts_with("herald_session=")))
    );
    // A wrong password and an unknown address get the same answer.
    let wrong = c.sign_in("admin@example.com", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let nobody = c.sign_in("nobody@example.com", PASSWORD).await;
    assert_eq!(nobody.status(), StatusCode::UNAUTHORIZED);
    assert!(c.cookie.is_none());
    // The address is case-insensitive; the cookie is what a session cookie must be.
    let ok = c.sign_in("Admin@Example.com", PASSWORD).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = ok.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let (s, body, h) = c.get(&format!("/projects/{p}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("<h1>Overview</h1>"));
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["cache-control"], "no-store");
    // Signing out ends the session on the server, not only in the browser.
    let csrf = c.csrf(&format!("/projects/{p}")).await;
    let (s, _) = c.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = c.get(&format!("/projects/{p}")).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "the old cookie no longer works");

    // Guessing: ten failures from one address (two above, eight here), then a wait, even
    // with the right password.
    let mut guesser = Client::new(&app);
    for _ in 0..8 {
        let r = guesser
            .sign_in("admin@example.com", "guess guess guess")
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = guesser.sign_in("admin@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    app.finish().await;
}

crate::on_both_backends!(
    forms_need_the_token_and_the_right_and_viewers_change_nothing,
    what_a_sender_wrote_is_shown_as_text_and_html_cannot_run
);

async fn forms_need_the_token_and_the_right_and_viewers_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    operator(
        &app,
        "owner@example.com",
        OperatorRole::Member,
        Some(ProjectRole::Owner),
    )
    .await;
    operator(
        &app,
        "viewer@example.com",
        OperatorRole::Member,
        Some(ProjectRole::Viewer),
    )
    .await;
    operator(&app, "stranger@example.com", OperatorRole::Member, None).await;
    let p = alpha(&app).await;
    let path = format!("/projects/{p}/suppressions");

    let mut owner = Client::new(&app);
    owner.sign_in("owner@example.com", PASSWORD).await;
    let csrf = owner.csrf(&path).await;
    // No token, a wrong token, or a cross-site request: refused, nothing added.
    let (s, _) = owner
        .post(&path, &[("csrf", "x"), ("email", "a@example.com")])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let cross = owner
        .http
        .post(format!("{}{path}", owner.base))
        .header("cookie", owner.cookie.clone().expect("cookie"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str()), ("email", "a@example.com")])
        .send()
        .await
        .expect("post");
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert!(
        app.store
            .find_suppression(&p, "a@example.com", None)
            .await
            .expect("find")
            .is_none()
    );
    // With the token: added, and the audit log says who did it.
    let (s, _) = owner
        .post(
            &path,
            &[
                ("csrf", &csrf),
                ("email", "a@example.com"),
                ("reason", "manual"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(
        app.store
            .find_suppression(&p, "a@example.com", None)
            .await
            .expect("find")
            .is_some()
    );
    // A bad address is said in the page, with 422.
    let (s, body) = owner
        .post(&path, &[("csrf", &csrf), ("email", "not an address")])
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("is not a valid address"), "{body}");

    let mut viewer = Client::new(&app);
    viewer.sign_in("viewer@example.com", PASSWORD).await;
    let (s, body, _) = viewer.get(&path).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("a@example.com"));
    assert!(!body.contains(">Remove<"), "a viewer is offered no change");
    let vcsrf = viewer.csrf(&format!("/projects/{p}")).await;
    let id = app
        .store
        .find_suppression(&p, "a@example.com", None)
        .await
        .expect("find")
        .expect("there")
        .id;
    let (s, _) = viewer
        .post(
            &format!("{path}/{id}/remove"),
            &[("csrf", &vcsrf), ("why", "because")],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = viewer
        .post(&path, &[("csrf", &vcsrf), ("email", "b@example.com")])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        app.store
            .find_suppression(&p, "a@example.com", None)
            .await
            .expect("find")
            .is_some()
    );
    assert!(
        app.store
            .find_suppression(&p, "b@example.com", None)
            .await
            .expect("find")
            .is_none()
    );

    // A member without the project does not learn it exists.
    let mut stranger = Client::new(&app);
    stranger.sign_in("stranger@example.com", PASSWORD).await;
    let (s, _, _) = stranger.get(&path).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Removing needs a reason; the audit log keeps it.
    let (s, _) = owner
        .post(
            &format!("{path}/{id}/remove"),
            &[("csrf", &csrf), ("why", " ")],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = owner
        .post(
            &format!("{path}/{id}/remove"),
            &[("csrf", &csrf), ("why", "asked to be sent to again")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, audit, _) = viewer.get(&format!("/projects/{p}/audit")).await;
    assert!(audit.contains("suppression.add") && audit.contains("suppression.remove"));
    assert!(audit.contains("asked to be sent to again") && audit.contains("owner@example.com"));

    // A lowered role and a removal end the sessions at once.
    app.store
        .grant_operator("owner@example.com", &p, Some(ProjectRole::Viewer))
        .await
        .expect("lower");
    let (s, _, _) = owner.get(&path).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "signed out by the lowered role");
    app.store
        .delete_operator("viewer@example.com")
        .await
        .expect("remove");
    let (s, _, _) = viewer.get(&path).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "signed out by the removal");
    app.finish().await;
}

async fn what_a_sender_wrote_is_shown_as_text_and_html_cannot_run(backend: Backend) {
    let app = TestApp::spawn(backend, None).await;
    operator(&app, "admin@example.com", OperatorRole::Admin, None).await;
    let p = alpha(&app).await;
    let mut body = email_to(&["ada@example.com"]);
    body["subject"] = "<script>alert(1)</script>".into();
    body["html"] =
        "<p>Hi<script>alert(2)</script><img src=\"https://tracker.example/p.png\"></p>".into();
    body["metadata"] = serde_json::json!({"note": "<b>bold</b>"});
    let id = app.send(&body).await;
    let mut c = Client::new(&app);
    c.sign_in("admin@example.com", PASSWORD).await;
    for path in [
        format!("/projects/{p}/emails"),
        format!("/projects/{p}/emails/{id}"),
    ] {
        let (s, page, _) = c.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(!page.contains("<script>alert"), "{path}: {page}");
        assert!(!page.contains("<b>bold"), "{path}");
        assert!(page.contains("&#60;script&#62;alert(1)"), "{path}: escaped");
    }
    let (_, page, _) = c.get(&format!("/projects/{p}/emails/{id}")).await;
    assert!(page.contains("<iframe class=\"preview\" title=\"The HTML part\" sandbox "));
    let (s, html, h) = c.get(&format!("/projects/{p}/emails/{id}/preview")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("alert(2)"),
        "the body as written, for the sandbox"
    );
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(csp.starts_with("sandbox;"), "{csp}");
    assert!(
        csp.contains("img-src data:;"),
        "no remote images unless asked: {csp}"
    );
    assert!(
        !csp.contains("script-src"),
        "default-src 'none' covers scripts: {csp}"
    );
    let (_, _, h) = c
        .get(&format!("/projects/{p}/emails/{id}/preview?images=show"))
        .await;
    assert!(
        h["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("img-src data: https:")
    );
    // Every other page answers on this database too.
    for section in [
        "",
        "/bounces?period=30d",
        "/suppressions",
        "/webhooks",
        "/domains",
        "/keys",
        "/audit",
        "/projects",
    ] {
        let (s, page, _) = c.get(&format!("/projects/{p}{section}")).await;
        assert_eq!(s, StatusCode::OK, "{section}: {page}");
    }
    // The MIME downloads, never renders in place.
    let (s, mime, h) = c.get(&format!("/projects/{p}/emails/{id}/raw")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h["content-disposition"]
            .to_str()
            .expect("cd")
            .starts_with("attachment")
    );
    assert!(mime.contains("Message-ID:"));
    app.finish().await;
}
