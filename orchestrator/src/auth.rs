//! API tokens: the API spends money, so every call but `/healthz` and `/metrics` needs one.
//!
//! A token is `flt_{name}:` + 32 random bytes in hex, shown once when made. The store keeps only
//! its SHA-256 with its name and scope (`tokens/{name}`), so a copy of the store grants nothing;
//! the name in the token lets every call check it with one read of its own record (agents call
//! the store gateway several times a second, and there is a token per node).
//! Scopes:
//! - `admin`: everything, tokens included;
//! - `read`: every GET;
//! - `submit:APP`: submit requests to APP and read them back;
//! - `agent:NODE:APP,APP…`: a node's agent, through the store gateway only (`/v1/store/…`), and
//!   there only the keys of its node and its apps ([`fleet_state::store::gateway`]).
//!
//! `fleetd` makes an admin token at its first start (written to `DATA_DIR/admin.token`, mode
//! 0600, named `admin-` + 8 random hex digits, so that several fleetd on one etcd each keep
//! theirs); later starts reuse it.

use std::fmt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleet_core::Time;
use fleet_core::keys::Keys;
use fleet_state::store::{Store, StoreError, StoreResult, get_json, to_json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    Admin,
    Read,
    Submit(String),
    Agent { node: u64, apps: Vec<String> },
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Read => f.write_str("read"),
            Scope::Submit(app) => write!(f, "submit:{app}"),
            Scope::Agent { node, apps } => write!(f, "agent:{node}:{}", apps.join(",")),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "admin" => Ok(Scope::Admin),
            "read" => Ok(Scope::Read),
            _ => {
                if let Some(app) = s.strip_prefix("submit:") {
                    if !app.is_empty() && !app.contains('/') {
                        return Ok(Scope::Submit(app.to_string()));
                    }
                } else if let Some((node, apps)) = s.strip_prefix("agent:").and_then(|r| r.split_once(':'))
                    && let Ok(node) = node.parse()
                {
                    let apps: Vec<String> = apps.split(',').filter(|a| !a.is_empty()).map(String::from).collect();
                    if apps.iter().all(|a| !a.contains('/')) {
                        return Ok(Scope::Agent { node, apps });
                    }
                }
                Err(format!("unknown scope `{s}`: use admin, read, or submit:APP"))
            }
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = String;
    fn try_from(s: String) -> Result<Scope, String> {
        s.parse()
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.to_string()
    }
}

impl Scope {
    /// Whether this scope allows `method` on `path` (an API path, without the query).
    pub fn allows(&self, method: &Method, path: &str) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Read => method == Method::GET && !path.starts_with("/v1/tokens") && !path.starts_with("/v1/store"),
            // Which keys, the gateway decides.
            Scope::Agent { .. } => method == Method::POST && path.starts_with("/v1/store/"),
            Scope::Submit(app) => {
                let mine = format!("/v1/apps/{app}/requests");
                // The OpenAI-compatible endpoints name the app in the body: checked there.
                let openai = path == "/v1/completions" || path == "/v1/chat/completions";
                (method == Method::POST && (path == mine || openai))
                    || (method == Method::GET && path.strip_prefix(&mine).is_some_and(|rest| rest.starts_with('/')))
            }
        }
    }
}

/// A token as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    pub created_at: Time,
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_token(name: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("flt_{name}:{}", hex(&bytes))
}

/// The name a token carries (`flt_{name}:{secret}`), if it is shaped like one.
fn name_of(token: &str) -> Option<&str> {
    let (name, secret) = token.strip_prefix("flt_")?.rsplit_once(':')?;
    (check_name(name).is_ok() && secret.len() == 64).then_some(name)
}

/// Token names: what `tokens/{name}` and log lines can carry.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok { Ok(()) } else { Err(format!("token name `{name}`: use 1–64 letters, digits, '-', '_' or '.'")) }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("a token named `{0}` exists already: pick another name, or revoke it first")]
    Exists(String),
}

/// Makes a token `name` with `scope`; returns the token (the only time it is seen).
pub async fn issue(store: &dyn Store, keys: &Keys, name: &str, scope: Scope, now: Time) -> Result<String, TokenError> {
    check_name(name).map_err(TokenError::Invalid)?;
    let token = new_token(name);
    let rec = TokenRecord { name: name.to_string(), scope, sha256: digest(&token), created_at: now };
    let key = keys.token(name);
    let res = store
        .txn(vec![fleet_state::store::Compare::absent(&key)], vec![fleet_state::store::Op::put(key, to_json(&rec))])
        .await?;
    if !res.succeeded {
        return Err(TokenError::Exists(name.to_string()));
    }
    Ok(token)
}

/// Every token's record.
pub async fn list(store: &dyn Store, keys: &Keys) -> StoreResult<Vec<TokenRecord>> {
    let (kvs, _) = store.range(&keys.tokens()).await?;
    kvs.iter().map(|kv| kv.json()).collect()
}

/// Revokes token `name`; false when there was none.
pub async fn revoke(store: &dyn Store, keys: &Keys, name: &str) -> StoreResult<bool> {
    store.delete(&keys.token(name)).await
}

/// The record of `token`, if it is a valid one.
pub async fn verify(store: &dyn Store, keys: &Keys, token: &str) -> StoreResult<Option<TokenRecord>> {
    let Some(name) = name_of(token) else { return Ok(None) };
    let rec = get_json::<TokenRecord>(store, &keys.token(name)).await?.map(|(r, _)| r);
    Ok(rec.filter(|r| r.sha256 == digest(token)))
}

/// fleetd's admin token: read from `dir/admin.token`, or made (and written there, mode 0600) at
/// the first start. Its record is put back in the store if missing (a fresh etcd, say).
pub async fn admin_token(store: &dyn Store, keys: &Keys, dir: &Path, now: Time) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = dir.join("admin.token");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // It holds the admin token (and, on the embedded store, every record): its owner's only.
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("restricting {} to its owner", dir.display()))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(&path) {
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} can be read by others (mode {mode:o}): an admin token spends money; `chmod 600` it, or delete \
                 it and restart fleetd to make a new one",
                path.display()
            );
        }
    }
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let suffix: [u8; 4] = rand::random();
            let t = new_token(&format!("admin-{}", hex(&suffix)));
            write_private(&path, &t).with_context(|| format!("writing {}", path.display()))?;
            t
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let name = name_of(&token)
        .with_context(|| {
            format!("{} does not hold a fleet token: delete it and restart fleetd to make a new one", path.display())
        })?
        .to_string();
    let rec = TokenRecord { name: name.clone(), scope: Scope::Admin, sha256: digest(&token), created_at: now };
    match get_json::<TokenRecord>(store, &keys.token(&name)).await? {
        Some((r, _)) if r.sha256 == rec.sha256 => {}
        _ => drop(store.put(&keys.token(&name), to_json(&rec), None).await?),
    }
    Ok(token)
}

/// Writes `text` to a new file only its owner can read.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// The token's record for a request's handlers (set by [`require`]).
#[derive(Debug, Clone)]
pub struct Caller(pub TokenRecord);

fn deny(status: StatusCode, msg: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

/// Middleware: `/healthz` and `/metrics` are open; everything else needs a bearer token whose
/// scope allows the call (401 without a valid token, 403 when its scope does not allow it).
pub async fn require(State(ctx): State<std::sync::Arc<crate::actors::Ctx>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    // The dashboard's page and scripts hold no data (it asks the API with the token it is given).
    if path == "/healthz" || path == "/metrics" || path == "/ui" || path.starts_with("/ui/") {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let Some(token) = presented else {
        return deny(
            StatusCode::UNAUTHORIZED,
            "this API needs a token (Authorization: Bearer …): fleetctl reads it from FLEET_TOKEN or its config \
             file; fleetd wrote its admin token to DATA_DIR/admin.token"
                .into(),
        );
    };
    let rec = match verify(&*ctx.store, &ctx.keys, &token).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return deny(
                StatusCode::UNAUTHORIZED,
                "unknown or revoked token: check FLEET_TOKEN / the config file, or ask an admin for a new one".into(),
            );
        }
        Err(e) => return deny(StatusCode::SERVICE_UNAVAILABLE, format!("cannot check the token: {e}")),
    };
    if !rec.scope.allows(req.method(), &path) {
        return deny(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` has scope {}, which does not allow {} {path}; use a token with the scope this needs",
                rec.name,
                rec.scope,
                req.method()
            ),
        );
    }
    req.extensions_mut().insert(Caller(rec));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_allow_what_they_say() {
        let get = Method::GET;
        let post = Method::POST;
        assert!(Scope::Admin.allows(&post, "/v1/nodes/1/drain"));
        assert!(Scope::Read.allows(&get, "/v1/nodes"));
        assert!(!Scope::Read.allows(&get, "/v1/tokens"));
        assert!(!Scope::Read.allows(&post, "/v1/apps/llm/requests"));
        assert!(!Scope::Read.allows(&Method::PUT, "/v1/spec"));
        assert!(!Scope::Read.allows(&get, "/v1/store/range"));
        let agent = Scope::Agent { node: 3, apps: vec!["llm".into()] };
        assert!(agent.allows(&post, "/v1/store/txn"));
        assert!(!agent.allows(&get, "/v1/nodes") && !agent.allows(&post, "/v1/apps/llm/requests"));
        let s = Scope::Submit("llm".into());
        assert!(s.allows(&post, "/v1/apps/llm/requests"));
        assert!(s.allows(&get, "/v1/apps/llm/requests/7"));
        assert!(!s.allows(&post, "/v1/apps/llm2/requests"));
        assert!(!s.allows(&get, "/v1/apps/llm2/requests/7"));
        assert!(!s.allows(&get, "/v1/nodes"));
        assert!(!s.allows(&post, "/v1/nodes/1/drain"));
        // The OpenAI-compatible endpoints: the app is in the body, checked by the handler.
        assert!(s.allows(&post, "/v1/completions") && s.allows(&post, "/v1/chat/completions"));
        assert!(!s.allows(&get, "/v1/completions"));
        assert!(!Scope::Read.allows(&post, "/v1/chat/completions"));
        assert!(!agent.allows(&post, "/v1/chat/completions"));
    }

    #[test]
    fn scopes_parse_and_print() {
        for s in ["admin", "read", "submit:llm", "agent:3:llm,sdxl", "agent:4:"] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        for bad in ["root", "submit:", "submit:a/b", ""] {
            assert!(bad.parse::<Scope>().unwrap_err().contains("use admin, read, or submit:APP"), "{bad}");
        }
        assert!(check_name("ci-bot_1.x").is_ok());
        assert!(check_name("a/b").is_err() && check_name("").is_err());
    }

    #[test]
    fn tokens_are_random_and_only_their_digest_is_kept() {
        let (a, b) = (new_token("ci"), new_token("ci"));
        assert_ne!(a, b);
        assert!(a.starts_with("flt_ci:") && a.len() == 4 + 3 + 64, "{a}");
        assert_eq!(name_of(&a), Some("ci"));
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), digest(&b));
        for bad in ["flt_forged", "flt_ci:short", "ci:0000", "flt_a/b:"] {
            assert_eq!(name_of(bad), None, "{bad}");
        }
    }
}
