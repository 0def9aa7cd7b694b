//! Bearer-token authentication and per-method scopes for `orders.v1.OrderService`.
//!
//! Tokens come from a TOML file of SHA-256 hashes (the tokens themselves are never stored); a
//! presented token is hashed and compared in constant time against every entry. The check runs
//! in the gate layer rather than a tonic interceptor because the scope depends on the method,
//! which only the request path tells. Health and reflection need no token.

use super::error::status;
use super::rate_limit::{PrincipalLimits, RateLimit, RateLimitEntry};
use crate::domain::Principal;
use orders_proto::reason;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use subtle::ConstantTimeEq;
use tonic::{Code, Status};

/// Path prefix of the calls that need a token.
pub(crate) const PROTECTED_PREFIX: &str = "/orders.v1.OrderService/";

/// A permission a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Scope {
    /// GetOrder, ListOrders, WatchOrders.
    #[serde(rename = "orders.read")]
    Read,
    /// CreateOrder, UpdateOrderStatus.
    #[serde(rename = "orders.write")]
    Write,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Read => "orders.read",
            Scope::Write => "orders.write",
        }
    }

    /// The scope a method of the order service needs.
    fn required_by(method: &str) -> Option<Scope> {
        match method {
            "CreateOrder" | "UpdateOrderStatus" => Some(Scope::Write),
            "GetOrder" | "ListOrders" | "WatchOrders" => Some(Scope::Read),
            _ => None,
        }
    }
}

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    /// It could not be read.
    #[error("cannot read tokens file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid TOML of the expected shape.
    #[error("tokens file {path} is not valid")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// An entry is wrong.
    #[error("tokens file {path}, token {index} ({principal}): {problem}")]
    Entry {
        /// The file.
        path: String,
        /// 1-based position of the entry.
        index: usize,
        /// The entry's principal.
        principal: String,
        /// What is wrong.
        problem: String,
    },
    /// The file-wide `[default_rate_limit]` is wrong.
    #[error("tokens file {path}, [default_rate_limit]: {problem}")]
    DefaultRateLimit {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// It names no token at all: nobody could call the service.
    #[error("tokens file {path} has no [[token]] entries")]
    Empty {
        /// The file.
        path: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
    /// The rate limit of every principal whose entries set none; unlimited when absent.
    #[serde(default)]
    default_rate_limit: Option<RateLimitEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    principal: String,
    scopes: Vec<Scope>,
    sha256: String,
    /// This principal's rate limit, instead of the file's default.
    #[serde(default)]
    rate_limit: Option<RateLimitEntry>,
}

/// One known token: whose it is and what it may do.
#[derive(Debug, Clone)]
struct Credential {
    principal: Principal,
    scopes: Vec<Scope>,
    hash: [u8; 32],
}

/// The tokens the service accepts.
#[derive(Debug, Clone)]
pub struct TokenSet {
    credentials: Vec<Credential>,
    /// The rate limit of each principal (see [`super::rate_limit`]).
    rate_limits: PrincipalLimits,
}

impl TokenSet {
    /// Loads and checks a tokens file.
    pub fn load(path: &Path) -> Result<TokenSet, TokensFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
            path: shown.clone(),
            source,
        })?;
        TokenSet::parse(&text, &shown)
    }

    /// Checks the text of a tokens file; `path` is only used in error messages.
    pub fn parse(text: &str, path: &str) -> Result<TokenSet, TokensFileError> {
        let file: TokensFile = toml::from_str(text).map_err(|source| TokensFileError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if file.token.is_empty() {
            return Err(TokensFileError::Empty {
                path: path.to_owned(),
            });
        }
        let default_rate_limit = file
            .default_rate_limit
            .as_ref()
            .map(RateLimit::try_from)
            .transpose()
            .map_err(|problem| TokensFileError::DefaultRateLimit {
                path: path.to_owned(),
                problem,
            })?;
        let mut rate_limits = PrincipalLimits::default();
        let mut seen = HashMap::new();
        let mut credentials = Vec::with_capacity(file.token.len());
        for (index, entry) in file.token.into_iter().enumerate() {
            let problem = |problem: String| TokensFileError::Entry {
                path: path.to_owned(),
                index: index + 1,
                principal: entry.principal.clone(),
                problem,
            };
            if entry.principal.trim().is_empty() {
                return Err(problem("principal must not be empty".into()));
            }
            if entry.scopes.is_empty() {
                return Err(problem("scopes must name at least one scope".into()));
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(entry.sha256.trim(), &mut hash).map_err(|_| {
                problem("sha256 must be 64 hex digits (the SHA-256 of the token)".into())
            })?;
            if let Some(other) = seen.insert(hash, entry.principal.clone()) {
                return Err(problem(format!("has the same sha256 as {other}")));
            }
            rate_limits
                .assign(
                    &entry.principal,
                    entry.rate_limit.as_ref(),
                    default_rate_limit,
                )
                .map_err(problem)?;
            credentials.push(Credential {
                principal: Principal::new(entry.principal.clone()),
                scopes: entry.scopes,
                hash,
            });
        }
        Ok(TokenSet {
            credentials,
            rate_limits,
        })
    }

    /// A set of one freshly generated token with every scope, for development mode; the token
    /// is returned so it can be shown once.
    pub fn development() -> (TokenSet, String) {
        let token = format!("dev-{}", hex::encode(rand::random::<[u8; 24]>()));
        let set = TokenSet {
            credentials: vec![Credential {
                principal: Principal::new("developer"),
                scopes: vec![Scope::Read, Scope::Write],
                hash: Sha256::digest(token.as_bytes()).into(),
            }],
            rate_limits: PrincipalLimits::default(),
        };
        (set, token)
    }

    /// The rate limit of every principal of the file.
    pub fn rate_limits(&self) -> &PrincipalLimits {
        &self.rate_limits
    }

    /// The credential of `token`, comparing against every entry in constant time.
    fn authenticate(&self, token: &str) -> Option<&Credential> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for credential in &self.credentials {
            if bool::from(credential.hash.ct_eq(&presented)) {
                found = Some(credential);
            }
        }
        found
    }

    /// Checks the `authorization` header of a call to `method` of the order service.
    pub(crate) fn authorize(
        &self,
        header: Option<&http::HeaderValue>,
        method: &str,
    ) -> Result<Principal, Status> {
        let Some(header) = header else {
            return Err(status(
                Code::Unauthenticated,
                reason::MISSING_CREDENTIALS,
                "this call needs an `authorization: Bearer <token>` header",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                status(
                    Code::Unauthenticated,
                    reason::MALFORMED_CREDENTIALS,
                    "the authorization header must be `Bearer <token>`",
                )
            })?;
        let credential = self.authenticate(token).ok_or_else(|| {
            status(
                Code::Unauthenticated,
                reason::UNKNOWN_TOKEN,
                "the bearer token is not known",
            )
        })?;
        if let Some(scope) = Scope::required_by(method)
            && !credential.scopes.contains(&scope)
        {
            return Err(super::error::status_with(
                Code::PermissionDenied,
                reason::MISSING_SCOPE,
                format!("{method} needs scope {}", scope.name()),
                HashMap::from([("scope".to_owned(), scope.name().to_owned())]),
            ));
        }
        Ok(credential.principal.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn tokens() -> TokenSet {
        let text = format!(
            "[[token]]\nprincipal = \"writer\"\nscopes = [\"orders.read\", \"orders.write\"]\nsha256 = \"{}\"\n\
             [[token]]\nprincipal = \"reader\"\nscopes = [\"orders.read\"]\nsha256 = \"{}\"\n",
            sha("w-token"),
            sha("r-token")
        );
        TokenSet::parse(&text, "test.toml").unwrap()
    }

    fn bearer(value: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn known_tokens_get_their_principal_and_scopes() {
        let tokens = tokens();
        let principal = tokens
            .authorize(Some(&bearer("Bearer w-token")), "CreateOrder")
            .unwrap();
        assert_eq!(principal.as_str(), "writer");
        assert_eq!(
            tokens
                .authorize(Some(&bearer("bearer r-token")), "GetOrder")
                .unwrap()
                .as_str(),
            "reader"
        );
        let denied = tokens
            .authorize(Some(&bearer("Bearer r-token")), "CreateOrder")
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
    }

    #[test]
    fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
        let tokens = tokens();
        for header in [None, Some(bearer("w-token")), Some(bearer("Bearer nope"))] {
            let refused = tokens.authorize(header.as_ref(), "GetOrder").unwrap_err();
            assert_eq!(refused.code(), Code::Unauthenticated);
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_entry_named() {
        let bad_hash =
            "[[token]]\nprincipal = \"p\"\nscopes = [\"orders.read\"]\nsha256 = \"xyz\"\n";
        let error = TokenSet::parse(bad_hash, "t.toml").unwrap_err().to_string();
        assert!(error.contains("token 1 (p)"), "{error}");
        let bad_scope = format!(
            "[[token]]\nprincipal = \"p\"\nscopes = [\"orders.admin\"]\nsha256 = \"{}\"\n",
            sha("x")
        );
        assert!(TokenSet::parse(&bad_scope, "t.toml").is_err());
        assert!(matches!(
            TokenSet::parse("", "t.toml"),
            Err(TokensFileError::Empty { .. })
        ));
    }

    #[test]
    fn rate_limits_come_from_the_entry_else_the_file_default_else_none() {
        let text = format!(
            "[default_rate_limit]\nper_second = 5\nburst = 10\n\n\
             [[token]]\nprincipal = \"own\"\nscopes = [\"orders.read\"]\nsha256 = \"{}\"\n\
             rate_limit = {{ per_second = 0.5, burst = 1 }}\n\
             [[token]]\nprincipal = \"defaulted\"\nscopes = [\"orders.read\"]\nsha256 = \"{}\"\n",
            sha("a"),
            sha("b")
        );
        let tokens = TokenSet::parse(&text, "t.toml").unwrap();
        let own = tokens.rate_limits().of("own").unwrap();
        assert_eq!((own.per_second(), own.burst()), (0.5, 1));
        let defaulted = tokens.rate_limits().of("defaulted").unwrap();
        assert_eq!((defaulted.per_second(), defaulted.burst()), (5.0, 10));

        let without_default = format!(
            "[[token]]\nprincipal = \"free\"\nscopes = [\"orders.read\"]\nsha256 = \"{}\"\n",
            sha("c")
        );
        let tokens = TokenSet::parse(&without_default, "t.toml").unwrap();
        assert_eq!(tokens.rate_limits().of("free"), None);
    }

    #[test]
    fn bad_rate_limits_are_refused_with_the_entry_named() {
        let entry = |limit: &str| {
            format!(
                "[[token]]\nprincipal = \"p\"\nscopes = [\"orders.read\"]\nsha256 = \"{}\"\n\
                 rate_limit = {limit}\n",
                sha("x")
            )
        };
        for (limit, expected) in [
            (
                "{ per_second = 0, burst = 10 }",
                "per_second must be a positive number",
            ),
            (
                "{ per_second = -1, burst = 10 }",
                "per_second must be a positive number",
            ),
            (
                "{ per_second = 10, burst = 0 }",
                "burst must be a whole number",
            ),
        ] {
            let error = TokenSet::parse(&entry(limit), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(error.contains("token 1 (p)"), "{error}");
            assert!(error.contains(expected), "{error}");
        }
        // Shape errors are TOML errors: they name the line.
        for limit in [
            "{ per_second = 10 }",
            "{ per_second = 10, burst = 1, extra = 2 }",
        ] {
            assert!(matches!(
                TokenSet::parse(&entry(limit), "t.toml"),
                Err(TokensFileError::Parse { .. })
            ));
        }
        let bad_default = format!(
            "[default_rate_limit]\nper_second = 10\nburst = -3\n\n{}",
            entry("{ per_second = 1, burst = 1 }")
        );
        let error = TokenSet::parse(&bad_default, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("[default_rate_limit]"), "{error}");

        let two_limits_for_one_principal = format!(
            "{}[[token]]\nprincipal = \"p\"\nscopes = [\"orders.read\"]\nsha256 = \"{}\"\n",
            entry("{ per_second = 1, burst = 1 }"),
            sha("y")
        );
        let error = TokenSet::parse(&two_limits_for_one_principal, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("token 2 (p)"), "{error}");
    }
}
