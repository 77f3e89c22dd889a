//! Sessions and CSRF. The session lives in a signed and encrypted cookie (actix-session's
//! `CookieSessionStore`, private mode); this module adds what the cookie store lacks:
//! idle and absolute timeouts, a per-session id that logout revokes (so a copied cookie dies
//! with the session), rotation at login, and the synchronizer CSRF token.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::Mutex;

use actix_session::{Session, SessionExt as _};
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::error::AppError;
use crate::state::AppState;

const USER_KEY: &str = "user";
const CSRF_KEY: &str = "csrf";
const FLASH_KEY: &str = "flash";

/// The longest flash notice kept (the cookie has a size limit).
const FLASH_MAX: usize = 400;

/// A one-time notice for the page a POST redirects to ("post/redirect/get"). It travels in
/// the signed and encrypted session, never in the URL, so a crafted link cannot make a
/// page show text the site did not write.
#[derive(Serialize, Deserialize)]
struct Flash {
    page: String,
    text: String,
}

/// Leaves `text` for the next view of `page` (a path, e.g. `/admin/areas`) in this session.
pub fn set_flash(session: &Session, page: &str, text: &str) {
    let text: String = text.chars().take(FLASH_MAX).collect();
    let _ = session.insert(
        FLASH_KEY,
        Flash {
            page: page.to_string(),
            text,
        },
    );
}

/// The notice left for `page`, removed so it shows once; a notice for another page stays.
pub fn take_flash(session: &Session, page: &str) -> Option<String> {
    let f = session.get::<Flash>(FLASH_KEY).ok().flatten()?;
    if f.page != page {
        return None;
    }
    session.remove(FLASH_KEY);
    Some(f.text)
}

/// Who is logged in; stored in the session cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionUser {
    /// The agent's customer id.
    pub id: i64,
    /// Login name.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Admin role.
    pub admin: bool,
    /// Random session id (revoked at logout).
    pub sid: String,
    /// Login time, UNIX seconds.
    pub created: i64,
    /// Login time, UNIX milliseconds (compared with a disable's instant; 0 in sessions
    /// begun before it was kept).
    #[serde(default)]
    pub created_ms: i64,
    /// Last request, UNIX seconds.
    pub seen: i64,
}

/// Session ids ended by logout, kept until they would have expired anyway.
#[derive(Default)]
pub struct Revoked {
    ids: Mutex<HashMap<String, i64>>,
}

impl Revoked {
    /// Revokes `sid` until `until` (UNIX seconds).
    pub fn revoke(&self, sid: &str, until: i64, now: i64) {
        let mut m = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, u| *u > now);
        m.insert(sid.to_string(), until);
    }

    /// Whether `sid` was revoked.
    pub fn contains(&self, sid: &str) -> bool {
        let m = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        m.contains_key(sid)
    }
}

/// Customers whose sessions the agent ended (a disable, learned from the revocation feed):
/// every session of the customer that began at or before that instant is refused. Instants
/// are UNIX milliseconds (the agent's clock for the disable, ours for the login; hosts are
/// assumed NTP-synchronised).
#[derive(Default)]
pub struct EndedCustomers {
    at: Mutex<HashMap<i64, i64>>,
}

impl EndedCustomers {
    /// Ends `customer_id`'s sessions begun at or before `at`; entries older than `keep`
    /// before `now` are forgotten (no session lives that long). All in milliseconds.
    pub fn end(&self, customer_id: i64, at: i64, now: i64, keep: i64) {
        let mut m = self.at.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, t| *t + keep > now);
        let t = m.entry(customer_id).or_insert(at);
        *t = (*t).max(at);
    }

    /// Whether a session of `customer_id` that began at `created` has been ended.
    pub fn ended(&self, customer_id: i64, created: i64) -> bool {
        let m = self.at.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&customer_id).is_some_and(|&at| created <= at)
    }
}

/// Current UNIX time in seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Current UNIX time in milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A random 128-bit hex token.
pub fn random_token() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

/// The session's CSRF token, created when missing.
pub fn csrf_token(session: &Session) -> String {
    if let Ok(Some(t)) = session.get::<String>(CSRF_KEY) {
        return t;
    }
    let t = random_token();
    let _ = session.insert(CSRF_KEY, &t);
    t
}

/// Checks a submitted CSRF token against the session's, in constant time.
pub fn check_csrf(session: &Session, submitted: &str) -> Result<(), AppError> {
    let Ok(Some(expected)) = session.get::<String>(CSRF_KEY) else {
        return Err(AppError::Csrf);
    };
    if expected.len() == submitted.len()
        && bool::from(expected.as_bytes().ct_eq(submitted.as_bytes()))
    {
        Ok(())
    } else {
        Err(AppError::Csrf)
    }
}

/// Starts a fresh session for `user`: the old session state (and id) is dropped and the
/// cookie renewed, so a session fixed before login is worthless after it.
pub fn login(session: &Session, mut user: SessionUser) -> Result<(), AppError> {
    session.clear();
    session.renew();
    let t = now();
    user.sid = random_token();
    user.created = t;
    // The caller may date the session from before it asked the agent (see routes::login),
    // so a disable that lands while the login is checked still ends it.
    if user.created_ms == 0 {
        user.created_ms = now_ms();
    }
    user.seen = t;
    session
        .insert(USER_KEY, &user)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    session
        .insert(CSRF_KEY, random_token())
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(())
}

/// Ends the session and revokes its id.
pub fn logout(session: &Session, state: &AppState) {
    if let Ok(Some(u)) = session.get::<SessionUser>(USER_KEY) {
        let t = now();
        state.revoked.revoke(
            &u.sid,
            u.created + state.cfg.session_absolute_secs as i64 + 60,
            t,
        );
    }
    session.purge();
}

/// Reads and validates the logged-in user, refreshing the idle clock.
pub fn current(session: &Session, state: &AppState) -> Option<SessionUser> {
    let mut u = session.get::<SessionUser>(USER_KEY).ok().flatten()?;
    let t = now();
    let idle = state.cfg.session_idle_secs as i64;
    let abs = state.cfg.session_absolute_secs as i64;
    if state.revoked.contains(&u.sid) || t - u.seen > idle || t - u.created > abs {
        session.purge();
        return None;
    }
    if state.ended.ended(u.id, u.created_ms.max(u.created * 1000)) {
        tracing::info!(login = %u.login, "session ended: the customer was disabled");
        logout(session, state);
        return None;
    }
    // Re-issue the cookie at most every 30 s to keep the idle clock without a Set-Cookie on
    // every response.
    if t - u.seen >= 30 {
        u.seen = t;
        let _ = session.insert(USER_KEY, &u);
    }
    Some(u)
}

/// Extractor: a logged-in user (customer or admin); otherwise a redirect to `/login`.
pub struct User(pub SessionUser, pub Session);

impl FromRequest for User {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(extract(req).map(|(u, s)| User(u, s)))
    }
}

/// Extractor: a logged-in admin; a customer gets 403.
pub struct Admin(pub SessionUser, pub Session);

impl FromRequest for Admin {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(extract(req).and_then(|(u, s)| {
            if u.admin {
                Ok(Admin(u, s))
            } else {
                Err(AppError::Forbidden)
            }
        }))
    }
}

fn extract(req: &HttpRequest) -> Result<(SessionUser, Session), AppError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::Internal("app state missing".into()))?;
    let session = req.get_session();
    let user = current(&session, state).ok_or(AppError::LoginRequired)?;
    Ok((user, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_customers_lose_older_sessions_only() {
        let e = EndedCustomers::default();
        e.end(7, 1000, 1000, 3600);
        assert!(e.ended(7, 999) && e.ended(7, 1000));
        assert!(!e.ended(7, 1001), "a session begun after the disable");
        assert!(!e.ended(8, 500), "another customer");
        e.end(7, 900, 1000, 3600);
        assert!(
            e.ended(7, 1000),
            "an older replayed entry does not shorten it"
        );
        e.end(9, 5000, 5000, 3600);
        assert!(
            !e.ended(7, 1000),
            "forgotten once no session can be that old"
        );
    }

    #[test]
    fn revoked_ids_expire_from_the_list() {
        let r = Revoked::default();
        r.revoke("a", 100, 0);
        assert!(r.contains("a"));
        r.revoke("b", 300, 200);
        assert!(!r.contains("a"));
        assert!(r.contains("b"));
    }

    #[test]
    fn tokens_are_random_hex() {
        let a = random_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_token());
    }
}
