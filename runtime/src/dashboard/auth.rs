//! Who may act: the token, sessions and CSRF tokens.
//!
//! - Reading pages needs nothing on a loopback address (whoever can reach it
//!   can reach Redis too); on any other address every page needs a session.
//! - Every state-changing request is a `POST` and needs either
//!   `Authorization: Bearer TOKEN` (scripts; a browser never sends that header
//!   cross-site), or a session cookie plus that session's CSRF token in the
//!   form's `csrf` field (browsers).
//! - A session is had by posting the token to `/login`: a random session id
//!   goes into an `HttpOnly`, `SameSite=Strict` cookie; its CSRF token is
//!   random too and kept server-side, so it is checked against what the server
//!   issued, not against another copy the browser sends.
//! - Secrets are compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "stoker_session";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most live sessions kept; the oldest goes when a login would pass it.
const MAX_SESSIONS: usize = 1024;

/// A logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// The token its forms must carry.
    pub csrf: String,
    expires: Instant,
}

/// The token and the live sessions.
pub struct Auth {
    token: String,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Auth {
    /// Access guarded by `token`.
    pub fn new(token: String) -> Auth {
        Auth {
            token,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `given` is the token.
    pub fn is_token(&self, given: &str) -> bool {
        same(given.as_bytes(), self.token.as_bytes())
    }

    /// Opens a session for a browser that gave the right token: (session id,
    /// session).
    pub fn login(&self, given: &str) -> Option<(String, Session)> {
        if !self.is_token(given) {
            return None;
        }
        let id = random_hex();
        let session = Session {
            csrf: random_hex(),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                sessions.remove(&k);
            }
        }
        sessions.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The live session with id `id`.
    pub fn session(&self, id: &str) -> Option<Session> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by constant-time comparison of every id: the map's own
        // lookup would leak timing about ids.
        sessions
            .iter()
            .find(|(k, _)| same(k.as_bytes(), id.as_bytes()))
            .map(|(_, s)| s.clone())
            .filter(|s| s.expires > Instant::now())
    }

    /// Ends session `id`.
    pub fn logout(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let key = sessions
            .keys()
            .find(|k| same(k.as_bytes(), id.as_bytes()))
            .cloned();
        if let Some(k) = key {
            sessions.remove(&k);
        }
    }
}

impl Session {
    /// Whether `given` is this session's CSRF token.
    pub fn csrf_ok(&self, given: &str) -> bool {
        same(given.as_bytes(), self.csrf.as_bytes())
    }
}

/// Compares two secrets in time that depends on their lengths only.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 128 random bits, hex: a session id, a CSRF token, a generated dashboard token.
pub fn random_hex() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_need_the_token_and_carry_their_csrf() {
        let auth = Auth::new("secret".into());
        assert!(auth.login("wrong").is_none());
        assert!(auth.login("").is_none());
        let (id, session) = auth.login("secret").unwrap();
        let found = auth.session(&id).unwrap();
        assert!(found.csrf_ok(&session.csrf));
        assert!(!found.csrf_ok("x"));
        assert!(!found.csrf_ok(""));
        assert!(auth.session("nope").is_none());
        auth.logout(&id);
        assert!(auth.session(&id).is_none());
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = "a=1; stoker_session=abc; b=2";
        assert_eq!(cookie(h, COOKIE), Some("abc"));
        assert_eq!(cookie(h, "c"), None);
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
