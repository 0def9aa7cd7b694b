//! Bearer-token authentication and per-method scopes for `orders.v1.OrderService`.
//!
//! Tokens come from a TOML file of SHA-256 hashes (the tokens themselves are never stored); a
//! presented token is hashed and compared in constant time against every entry. The check runs
//! in the gate layer rather than a tonic interceptor because the scope depends on the method,
//! which only the request path tells. Health and reflection need no token.
//!
//! Under mutual TLS the file may also map client certificates to principals
//! (`[[client_cert]]`, by URI or DNS SAN): a call without a token then acts as its
//! certificate's principal; a call with a token acts as the token's.

use super::error::status;
use super::known_tokens::KnownTokens;
use super::peer::PeerCertificate;
use super::rate_limit::{PrincipalLimits, RateLimit, RateLimitEntry};
use crate::domain::Principal;
use orders_proto::reason;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::{Code, Status};

/// Path prefixes of the calls that need a token: the order service's and the webhook service's.
pub(crate) const PROTECTED_PREFIXES: [&str; 2] =
    ["/orders.v1.OrderService/", "/orders.v1.WebhookService/"];

/// The method name of a call that needs a token (`CreateOrder`), from its path.
pub(crate) fn protected_method(path: &str) -> Option<&str> {
    PROTECTED_PREFIXES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
}

/// A permission a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Scope {
    /// GetOrder, ListOrders, WatchOrders.
    #[serde(rename = "orders.read")]
    Read,
    /// CreateOrder, UpdateOrderStatus.
    #[serde(rename = "orders.write")]
    Write,
    /// Every method of orders.v1.WebhookService.
    #[serde(rename = "webhooks.admin")]
    WebhooksAdmin,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Read => "orders.read",
            Scope::Write => "orders.write",
            Scope::WebhooksAdmin => "webhooks.admin",
        }
    }

    /// The scope a method of the order service needs.
    fn required_by(method: &str) -> Option<Scope> {
        match method {
            "CreateOrder" | "UpdateOrderStatus" => Some(Scope::Write),
            "GetOrder" | "ListOrders" | "WatchOrders" => Some(Scope::Read),
            "CreateWebhookEndpoint"
            | "GetWebhookEndpoint"
            | "ListWebhookEndpoints"
            | "UpdateWebhookEndpoint"
            | "DeleteWebhookEndpoint"
            | "RotateWebhookSecret"
            | "ListWebhookDeliveries"
            | "ReplayWebhookEvents" => Some(Scope::WebhooksAdmin),
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
    /// A `[[client_cert]]` entry is wrong.
    #[error("tokens file {path}, client_cert {index} ({principal}): {problem}")]
    ClientCertEntry {
        /// The file.
        path: String,
        /// 1-based position of the entry among the `[[client_cert]]` entries.
        index: usize,
        /// The entry's principal.
        principal: String,
        /// What is wrong.
        problem: String,
    },
    /// It names no token and no client certificate: nobody could call the service.
    #[error("tokens file {path} has no [[token]] or [[client_cert]] entries")]
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
    #[serde(default)]
    client_cert: Vec<ClientCertEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCertEntry {
    principal: String,
    scopes: Vec<Scope>,
    uri_san: Option<String>,
    dns_san: Option<String>,
    /// The principal's rate limit, as on a `[[token]]` entry.
    #[serde(default)]
    rate_limit: Option<RateLimitEntry>,
}

/// The certificate name a `[[client_cert]]` entry matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CertificateName {
    /// A URI SAN, compared exactly (a SPIFFE ID, for one).
    Uri(String),
    /// A DNS SAN, compared without regard to ASCII case; wildcard names never match.
    Dns(String),
}

impl CertificateName {
    fn is_in(&self, certificate: &PeerCertificate) -> bool {
        match self {
            CertificateName::Uri(uri) => certificate.uri_names().iter().any(|name| name == uri),
            CertificateName::Dns(dns) => certificate
                .dns_names()
                .iter()
                .any(|name| name.eq_ignore_ascii_case(dns)),
        }
    }
}

/// One mapped client certificate identity: whose it is and what it may do.
#[derive(Debug, Clone)]
struct CertificateCredential {
    name: CertificateName,
    principal: Principal,
    scopes: Vec<Scope>,
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
    /// `[[client_cert]]` entries, in file order (the first that matches a certificate wins).
    certificates: Vec<CertificateCredential>,
    /// Tokens already authenticated, so a token costs one SHA-256, not one per call.
    known: Arc<KnownTokens>,
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
        if file.token.is_empty() && file.client_cert.is_empty() {
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
            check_principal_and_scopes(&entry.principal, &entry.scopes).map_err(problem)?;
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
        let certificates =
            parse_client_certs(file.client_cert, path, &mut rate_limits, default_rate_limit)?;
        Ok(TokenSet {
            credentials,
            rate_limits,
            certificates,
            known: Arc::default(),
        })
    }

    /// A set of one freshly generated token with every scope, for development mode; the token
    /// is returned so it can be shown once.
    pub fn development() -> (TokenSet, String) {
        let token = format!("dev-{}", hex::encode(rand::random::<[u8; 24]>()));
        let set = TokenSet {
            credentials: vec![Credential {
                principal: Principal::new("developer"),
                scopes: vec![Scope::Read, Scope::Write, Scope::WebhooksAdmin],
                hash: Sha256::digest(token.as_bytes()).into(),
            }],
            rate_limits: PrincipalLimits::default(),
            certificates: Vec::new(),
            known: Arc::default(),
        };
        (set, token)
    }

    /// The rate limit of every principal of the file.
    pub fn rate_limits(&self) -> &PrincipalLimits {
        &self.rate_limits
    }

    /// The credential of `token`, comparing against every entry in constant time.
    fn authenticate(&self, token: &str) -> Option<&Credential> {
        if let Some(index) = self.known.get(token.as_bytes()) {
            return self.credentials.get(index);
        }
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (index, credential) in self.credentials.iter().enumerate() {
            if bool::from(credential.hash.ct_eq(&presented)) {
                found = Some(index);
            }
        }
        let index = found?;
        self.known.remember(token.as_bytes(), index);
        self.credentials.get(index)
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
        permit(method, &credential.scopes)?;
        Ok(credential.principal.clone())
    }
}

impl TokenSet {
    /// Whether the file maps any client certificate (they only matter under mutual TLS).
    pub fn maps_client_certificates(&self) -> bool {
        !self.certificates.is_empty()
    }

    /// Authenticates a call to `method` of the order service: by its bearer token when it
    /// carries an `authorization` header (the certificate, if any, was verified by the TLS
    /// handshake already), otherwise by its client certificate's `[[client_cert]]` entry.
    pub(crate) fn authorize_call(
        &self,
        header: Option<&http::HeaderValue>,
        certificate: Option<&PeerCertificate>,
        method: &str,
    ) -> Result<Principal, Status> {
        let Some(certificate) = certificate.filter(|_| header.is_none()) else {
            return self.authorize(header, method);
        };
        let Some(mapped) = self
            .certificates
            .iter()
            .find(|mapped| mapped.name.is_in(certificate))
        else {
            return Err(status(
                Code::Unauthenticated,
                reason::UNKNOWN_CLIENT_CERTIFICATE,
                "the client certificate is not mapped to a principal, and the call has no \
                 `authorization: Bearer <token>` header",
            ));
        };
        permit(method, &mapped.scopes)?;
        Ok(mapped.principal.clone())
    }
}

/// What every entry, `[[token]]` or `[[client_cert]]`, must have: a principal and a scope.
fn check_principal_and_scopes(principal: &str, scopes: &[Scope]) -> Result<(), String> {
    if principal.trim().is_empty() {
        return Err("principal must not be empty".into());
    }
    if scopes.is_empty() {
        return Err("scopes must name at least one scope".into());
    }
    Ok(())
}

/// `PERMISSION_DENIED` unless `scopes` hold the one `method` needs: the same rule for a token's
/// principal and a certificate's.
fn permit(method: &str, scopes: &[Scope]) -> Result<(), Status> {
    match Scope::required_by(method) {
        Some(scope) if !scopes.contains(&scope) => Err(super::error::status_with(
            Code::PermissionDenied,
            reason::MISSING_SCOPE,
            format!("{method} needs scope {}", scope.name()),
            HashMap::from([("scope".to_owned(), scope.name().to_owned())]),
        )),
        _ => Ok(()),
    }
}

/// Checks the `[[client_cert]]` entries: a principal, scopes, and exactly one of `uri_san`
/// and `dns_san`, each name mapped once; their rate limits join the principals' in
/// `rate_limits` (a principal may have both tokens and certificates: one limit, shared).
fn parse_client_certs(
    entries: Vec<ClientCertEntry>,
    path: &str,
    rate_limits: &mut PrincipalLimits,
    default_rate_limit: Option<RateLimit>,
) -> Result<Vec<CertificateCredential>, TokensFileError> {
    let mut seen = HashMap::new();
    let mut certificates = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let problem = |problem: String| TokensFileError::ClientCertEntry {
            path: path.to_owned(),
            index: index + 1,
            principal: entry.principal.clone(),
            problem,
        };
        check_principal_and_scopes(&entry.principal, &entry.scopes).map_err(problem)?;
        let name = match (&entry.uri_san, &entry.dns_san) {
            (Some(uri), None) if !uri.trim().is_empty() => CertificateName::Uri(uri.clone()),
            (None, Some(dns)) if !dns.trim().is_empty() && !dns.contains('*') => {
                CertificateName::Dns(dns.to_ascii_lowercase())
            }
            _ => {
                return Err(problem(
                    "needs exactly one of uri_san = \"spiffe://…\" and dns_san = \"name\" \
                     (no wildcards)"
                        .into(),
                ));
            }
        };
        if let Some(other) = seen.insert(name.clone(), entry.principal.clone()) {
            return Err(problem(format!("maps the same name as {other}")));
        }
        rate_limits
            .assign(
                &entry.principal,
                entry.rate_limit.as_ref(),
                default_rate_limit,
            )
            .map_err(problem)?;
        certificates.push(CertificateCredential {
            name,
            principal: Principal::new(entry.principal.clone()),
            scopes: entry.scopes,
        });
    }
    Ok(certificates)
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

    #[test]
    fn client_cert_principals_get_rate_limits_like_token_principals() {
        let text = format!(
            "[default_rate_limit]\nper_second = 5\nburst = 10\n\n\
             [[token]]\nprincipal = \"billing\"\nscopes = [\"orders.read\"]\nsha256 = \"{}\"\n\
             rate_limit = {{ per_second = 1, burst = 2 }}\n\
             [[client_cert]]\nprincipal = \"billing\"\nscopes = [\"orders.read\"]\ndns_san = \"billing.internal\"\n\
             rate_limit = {{ per_second = 1, burst = 2 }}\n\
             [[client_cert]]\nprincipal = \"shipping\"\nscopes = [\"orders.read\"]\ndns_san = \"shipping.internal\"\n",
            sha("b-token")
        );
        let tokens = TokenSet::parse(&text, "t.toml").unwrap();
        let billing = tokens.rate_limits().of("billing").unwrap();
        assert_eq!((billing.per_second(), billing.burst()), (1.0, 2));
        let shipping = tokens.rate_limits().of("shipping").unwrap();
        assert_eq!((shipping.per_second(), shipping.burst()), (5.0, 10));

        // A principal's certificate and token share one limit, so they must agree.
        let disagreeing = text.replacen(
            "[[client_cert]]\nprincipal = \"billing\"\nscopes = [\"orders.read\"]\ndns_san = \"billing.internal\"\n\
             rate_limit = { per_second = 1, burst = 2 }",
            "[[client_cert]]\nprincipal = \"billing\"\nscopes = [\"orders.read\"]\ndns_san = \"billing.internal\"\n\
             rate_limit = { per_second = 9, burst = 2 }",
            1,
        );
        let error = TokenSet::parse(&disagreeing, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("client_cert 1 (billing)"), "{error}");
    }

    fn with_client_certs() -> TokenSet {
        let text = format!(
            "[[token]]\nprincipal = \"writer\"\nscopes = [\"orders.read\", \"orders.write\"]\nsha256 = \"{}\"\n\
             [[client_cert]]\nprincipal = \"billing\"\nscopes = [\"orders.read\"]\nuri_san = \"spiffe://example.org/billing\"\n\
             [[client_cert]]\nprincipal = \"shipping\"\nscopes = [\"orders.read\", \"orders.write\"]\ndns_san = \"Shipping.Internal\"\n",
            sha("w-token")
        );
        TokenSet::parse(&text, "test.toml").unwrap()
    }

    fn certificate(uris: &[&str], dns: &[&str]) -> PeerCertificate {
        PeerCertificate::new(
            uris.iter().map(|s| (*s).to_owned()).collect(),
            dns.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    #[test]
    fn a_mapped_certificate_without_a_token_acts_as_its_principal_within_its_scopes() {
        let tokens = with_client_certs();
        let billing = certificate(&["spiffe://example.org/billing"], &[]);
        let principal = tokens
            .authorize_call(None, Some(&billing), "GetOrder")
            .unwrap();
        assert_eq!(principal.as_str(), "billing");
        let denied = tokens
            .authorize_call(None, Some(&billing), "CreateOrder")
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        // DNS names compare without regard to case.
        let shipping = certificate(&[], &["shipping.internal"]);
        let principal = tokens
            .authorize_call(None, Some(&shipping), "CreateOrder")
            .unwrap();
        assert_eq!(principal.as_str(), "shipping");
    }

    #[test]
    fn a_token_wins_over_the_certificate_and_an_unmapped_certificate_alone_is_refused() {
        let tokens = with_client_certs();
        let billing = certificate(&["spiffe://example.org/billing"], &[]);
        let principal = tokens
            .authorize_call(
                Some(&bearer("Bearer w-token")),
                Some(&billing),
                "CreateOrder",
            )
            .unwrap();
        assert_eq!(principal.as_str(), "writer");
        let unknown = tokens
            .authorize_call(Some(&bearer("Bearer nope")), Some(&billing), "GetOrder")
            .unwrap_err();
        assert_eq!(unknown.code(), Code::Unauthenticated);

        let stranger = certificate(
            &["spiffe://example.org/stranger"],
            &["billing.internal.evil"],
        );
        let refused = tokens
            .authorize_call(None, Some(&stranger), "GetOrder")
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert!(refused.message().contains("not mapped"), "{refused:?}");
    }

    #[test]
    fn client_cert_entries_need_exactly_one_name_and_may_stand_alone() {
        let both = "[[client_cert]]\nprincipal = \"p\"\nscopes = [\"orders.read\"]\n\
                    uri_san = \"spiffe://a\"\ndns_san = \"a\"\n";
        let error = TokenSet::parse(both, "t.toml").unwrap_err().to_string();
        assert!(error.contains("client_cert 1 (p)"), "{error}");
        let neither = "[[client_cert]]\nprincipal = \"p\"\nscopes = [\"orders.read\"]\n";
        assert!(TokenSet::parse(neither, "t.toml").is_err());
        let wildcard =
            "[[client_cert]]\nprincipal = \"p\"\nscopes = [\"orders.read\"]\ndns_san = \"*.a\"\n";
        assert!(TokenSet::parse(wildcard, "t.toml").is_err());
        let twice = "[[client_cert]]\nprincipal = \"p\"\nscopes = [\"orders.read\"]\ndns_san = \"a\"\n\
                     [[client_cert]]\nprincipal = \"q\"\nscopes = [\"orders.read\"]\ndns_san = \"A\"\n";
        assert!(TokenSet::parse(twice, "t.toml").is_err());
        let alone =
            "[[client_cert]]\nprincipal = \"p\"\nscopes = [\"orders.read\"]\ndns_san = \"a\"\n";
        assert!(
            TokenSet::parse(alone, "t.toml")
                .unwrap()
                .maps_client_certificates()
        );
    }
}
