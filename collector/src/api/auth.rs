//! Bearer tokens: stored only as SHA-256 hashes (`[[http.tokens]]`),
//! compared in constant time, each with a role.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};
use crate::config::{TokenConfig, TokenRole};

/// The name recorded as `created_by` when no tokens are configured (a
/// loopback-only collector whose every caller is an admin).
pub const LOCAL_CALLER: &str = "local";

/// Who may call the API.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// No tokens configured: every caller is the admin [`LOCAL_CALLER`].
    /// The config allows this only on a loopback `http.listen`.
    Open,
    /// Only holders of these tokens.
    Tokens(Vec<Holder>),
}

#[derive(Clone)]
pub(crate) struct Holder {
    name: String,
    role: TokenRole,
    sha256: [u8; 32],
    unit: Option<String>,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The table of `tokens`; an error names a hash that is not 64 hex digits.
    pub(crate) fn new(tokens: &[TokenConfig]) -> anyhow::Result<Self> {
        if tokens.is_empty() {
            return Ok(Self::Open);
        }
        let holders = tokens
            .iter()
            .map(|t| {
                let sha256 = parse_hex32(&t.sha256).ok_or_else(|| {
                    anyhow::anyhow!(
                        "http.tokens: the sha256 of {:?} is not 64 hex digits",
                        t.name
                    )
                })?;
                Ok(Holder {
                    name: t.name.clone(),
                    role: t.role,
                    sha256,
                    unit: t.unit.clone(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self::Tokens(holders))
    }

    /// The holder of `token`, comparing its hash with every configured one
    /// in full (no early exit, so timing does not tell how much matched).
    pub(crate) fn identify(&self, token: &str) -> Option<Caller> {
        let Self::Tokens(holders) = self else {
            return Some(Caller::local());
        };
        let presented = sha256(token.as_bytes());
        let mut found = None;
        for holder in holders {
            if constant_time_eq(&presented, &holder.sha256) {
                found = Some(Caller {
                    name: holder.name.clone(),
                    role: holder.role,
                    unit: holder.unit.clone(),
                });
            }
        }
        found
    }
}

impl Auth {
    /// No tokens are configured: every caller is the local admin.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }

    /// Whether the token whose SHA-256 (hex) is `token_sha256` is still
    /// configured with `role` (a dashboard session ends when its token is
    /// removed, replaced by a new secret, or changes role).
    #[cfg(test)]
    pub(crate) fn still_holds(&self, token_sha256: &str, role: TokenRole) -> bool {
        self.unit_of_held(token_sha256, role).is_some()
    }

    /// The unit the token whose SHA-256 (hex) is `token_sha256` is scoped
    /// to now (`Some(None)`: none), when it is still configured with
    /// `role`. A session takes its scope from the config at each request,
    /// so rescoping a token rescopes its open sessions.
    pub(crate) fn unit_of_held(
        &self,
        token_sha256: &str,
        role: TokenRole,
    ) -> Option<Option<String>> {
        match self {
            Self::Open => Some(None),
            Self::Tokens(holders) => {
                let presented = parse_hex32(token_sha256)?;
                holders
                    .iter()
                    .find(|h| constant_time_eq(&presented, &h.sha256) && h.role == role)
                    .map(|h| h.unit.clone())
            }
        }
    }
}

/// The authenticated caller of a request (an extractor: requests without a
/// known token are answered 401 before any handler runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`created_by` of corrections).
    pub name: String,
    pub role: TokenRole,
    /// The unit the token is scoped to (`[[http.tokens]] unit`).
    pub unit: Option<String>,
}

impl Caller {
    pub(crate) fn local() -> Self {
        Self {
            name: LOCAL_CALLER.into(),
            role: TokenRole::Admin,
            unit: None,
        }
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            TokenRole::Admin => Ok(()),
            TokenRole::Evaluator => Err(ApiError::forbidden(format!(
                "token {:?} has the evaluator role, which reads only; this route needs an admin token",
                self.name
            ))),
        }
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        if let Auth::Open = *state.auth {
            return Ok(Caller::local());
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header is not \"Bearer <token>\"")
            })?;
        state
            .auth
            .identify(token)
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// Equal in time independent of where the first difference is (`subtle`
/// keeps the optimiser from turning the comparison into an early exit).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    labhours_shared::trust::from_hex::<32>(text)
}

/// The lower-case hex SHA-256 of a token, as `[[http.tokens]]` keeps it.
pub fn hash_token(token: &str) -> String {
    labhours_shared::trust::hex(&sha256(token.as_bytes()))
}

/// A new random token: `lh_` and 32 random bytes in hex.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes from the system: {e}"))?;
    Ok(format!("lh_{}", labhours_shared::trust::hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_token_holds_only_while_its_secret_and_role_are_configured() {
        let config = |secret: &str, role| {
            Auth::new(&[crate::config::TokenConfig {
                name: "office".into(),
                role,
                sha256: hash_token(secret),
                unit: None,
            }])
            .expect("valid table")
        };
        let old = hash_token("old-secret");
        assert!(config("old-secret", TokenRole::Admin).still_holds(&old, TokenRole::Admin));
        // The same name with a new secret (a leaked token replaced).
        assert!(!config("new-secret", TokenRole::Admin).still_holds(&old, TokenRole::Admin));
        assert!(!config("old-secret", TokenRole::Evaluator).still_holds(&old, TokenRole::Admin));
        assert!(!config("old-secret", TokenRole::Admin).still_holds("not hex", TokenRole::Admin));
    }

    #[test]
    fn a_hash_is_the_lower_case_hex_sha256_of_the_token_text() {
        assert_eq!(
            hash_token("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(parse_hex32(&hash_token("test")), Some(sha256(b"test")));
    }

    #[test]
    fn new_tokens_differ_and_have_the_documented_shape() {
        let a = new_token().expect("random");
        let b = new_token().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert!(a.starts_with("lh_"));
    }

    #[test]
    fn constant_time_eq_compares_every_byte() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] = 8;
        assert!(!constant_time_eq(&a, &b));
    }
}
