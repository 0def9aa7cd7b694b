//! The client interceptor that adds `authorization: Bearer <token>` to every call that does not
//! already carry an `authorization` value of its own (the HTTP gateway passes its caller's).

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::settings::SettingsError;

/// Adds the configured bearer token, if any.
#[derive(Debug, Clone, Default)]
pub struct AuthInterceptor {
    header: Option<AsciiMetadataValue>,
}

impl AuthInterceptor {
    /// An interceptor sending `token`, or nothing when there is no token.
    pub fn new(token: Option<&str>) -> Result<Self, SettingsError> {
        let header = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<AsciiMetadataValue>()
                    .map_err(|_| SettingsError::InvalidToken)
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header
            && !request.metadata().contains_key("authorization")
        {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_token_unless_the_call_has_its_own() {
        let mut auth = AuthInterceptor::new(Some("s3cret")).unwrap();
        let request = auth.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );

        let mut own = Request::new(());
        own.metadata_mut()
            .insert("authorization", "Bearer caller".parse().unwrap());
        let request = auth.call(own).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer caller"
        );

        let mut none = AuthInterceptor::new(None).unwrap();
        assert!(
            none.call(Request::new(()))
                .unwrap()
                .metadata()
                .get("authorization")
                .is_none()
        );
    }
}
