//! Log-in, log-out, and the checks every page and form passes: a live
//! session whose user still exists unchanged, and for a change, the
//! operator role, the session's CSRF token and the console's own origin.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::html::{bare_page, esc};
use super::sessions::{Session, COOKIE};
use super::users::Role;
use super::{blocking, html_response, see_other, shared, ConsoleState};

/// A submitted form, repeated fields kept (`id=a&id=b`).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The client's address, for throttling and the audit log.
pub fn client_address(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The answer instead of a page or a change: boxed, as it is large.
pub type Refused = Box<HttpResponse>;

/// The session of a page request, or a redirect to the log-in page.
pub fn require(req: &HttpRequest, state: &ConsoleState) -> Result<Session, Refused> {
    let to_login = || -> Refused {
        let next = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        Box::new(see_other(&format!(
            "/login?next={}",
            super::html::query_value(next)
        )))
    };
    let Some(cookie) = req.cookie(COOKIE) else {
        return Err(to_login());
    };
    let Some(session) = state.sessions.touch(cookie.value()) else {
        return Err(to_login());
    };
    // A user removed, or whose password or role changed, is logged out.
    match state.users.find(&session.user) {
        Ok(Some(user)) if user.generation == session.generation && user.role == session.role => {
            Ok(session)
        }
        Ok(_) => {
            state.sessions.close(&session.id);
            Err(to_login())
        }
        Err(e) => Err(Box::new(html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            bare_page(
                "Console error",
                &format!("<p class=\"error\">{}</p>", esc(&e)),
            ),
        ))),
    }
}

/// The session of a state-changing form: logged in, the role `needed`,
/// the CSRF token, the console's own origin. Refusals are audited.
pub fn require_change(
    req: &HttpRequest,
    state: &ConsoleState,
    form: &Form,
    needed: Role,
    action: &str,
    target: &str,
) -> Result<Session, Refused> {
    let session = require(req, state)?;
    let refuse = |status: StatusCode, why: &str| -> Refused {
        state.audit.record(
            &session.user,
            action,
            target,
            &format!("refused: {why}"),
            Some(client_address(req)),
        );
        tracing::warn!(user = %session.user, action, target, reason = why, "console change refused");
        Box::new(html_response(
            status,
            super::html::page(
                "Not allowed",
                "",
                &session,
                &format!(
                    r#"<p class="error" role="alert">{}</p><p><a href="/">Back to the overview</a></p>"#,
                    esc(why)
                ),
            ),
        ))
    };
    if !same_origin(req) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the form was sent from another site",
        ));
    }
    if !form
        .get("csrf")
        .is_some_and(|token| session.csrf_matches(token))
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the form's security token is missing or stale; reload the page and try again",
        ));
    }
    if needed == Role::Operator && session.role != Role::Operator {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "your role ({}) may only read; {action} needs an operator",
                session.role.as_str()
            ),
        ));
    }
    Ok(session)
}

/// True unless the browser says the request came from another origin.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let origin = origin.to_str().unwrap_or_default();
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|o| o == host)
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Where to go after log-in: only a path on this console.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

fn login_form(next: &str, message: Option<&str>, user: &str) -> String {
    let message = message.map(super::html::error).unwrap_or_default();
    bare_page(
        "Atom console",
        &format!(
            r#"{message}<form class="login" method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label for="user">User name</label><input id="user" name="user" autocomplete="username" value="{user}" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button class="primary" type="submit">Log in</button></form>
<p class="muted">Users are made with <code>atom users add NAME --role operator|viewer</code>.</p>"#,
            next = esc(next),
            user = esc(user)
        ),
    )
}

pub async fn login_page(query: web::Query<LoginQuery>) -> HttpResponse {
    let next = safe_next(query.next.as_deref());
    html_response(StatusCode::OK, login_form(&next, None, ""))
}

pub async fn login(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    body: web::Bytes,
) -> HttpResponse {
    let form = Form::parse(&body);
    let user = form.get("user").unwrap_or_default().trim().to_string();
    let password = form.get("password").unwrap_or_default().to_string();
    let next = safe_next(form.get("next"));
    let address = client_address(&req);
    if !same_origin(&req) {
        return html_response(
            StatusCode::FORBIDDEN,
            login_form(
                &next,
                Some("The log-in form was sent from another site."),
                "",
            ),
        );
    }
    if let Some(wait) = state.throttle.wait(&user, &address) {
        let seconds = wait.as_secs().max(1);
        state.audit.record(
            &user,
            "login",
            &user,
            "refused: too many failed log-ins",
            Some(address),
        );
        return HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, seconds.to_string()))
            .content_type("text/html; charset=utf-8")
            .body(login_form(
                &next,
                Some(&format!(
                    "Too many failed log-ins for this user or from this address. Try again in {seconds} seconds."
                )),
                &user,
            ));
    }
    let console = shared(&state);
    let (name, pw) = (user.clone(), password);
    let verified = blocking(move || console.users.verify(&name, &pw)).await;
    match verified {
        Ok(Some(found)) => {
            state.throttle.succeeded(&user, &address);
            let session = match state
                .sessions
                .open(&found.name, found.role, found.generation)
            {
                Ok(session) => session,
                Err(e) => {
                    return html_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        login_form(&next, Some(&e), &user),
                    )
                }
            };
            state
                .audit
                .record(&found.name, "login", &found.name, "ok", Some(address));
            let mut cookie = actix_web::cookie::Cookie::build(COOKIE, session.id)
                .path("/")
                .http_only(true)
                .same_site(actix_web::cookie::SameSite::Strict)
                .finish();
            cookie.set_secure(state.https);
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, next))
                .cookie(cookie)
                .finish()
        }
        Ok(None) => {
            state.throttle.failed(&user, &address);
            state.audit.record(
                &user,
                "login",
                &user,
                "refused: wrong user name or password",
                Some(address),
            );
            html_response(
                StatusCode::UNAUTHORIZED,
                login_form(&next, Some("Wrong user name or password."), &user),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "console log-in failed");
            html_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                login_form(&next, Some(&e), &user),
            )
        }
    }
}

pub async fn logout(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    body: web::Bytes,
) -> HttpResponse {
    let form = Form::parse(&body);
    let session = match require_change(&req, &state, &form, Role::Viewer, "logout", "") {
        Ok(session) => session,
        Err(refused) => return *refused,
    };
    state.sessions.close(&session.id);
    state.audit.record(
        &session.user,
        "logout",
        &session.user,
        "ok",
        Some(client_address(&req)),
    );
    let mut gone = actix_web::cookie::Cookie::build(COOKIE, "")
        .path("/")
        .finish();
    gone.make_removal();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .cookie(gone)
        .finish()
}
