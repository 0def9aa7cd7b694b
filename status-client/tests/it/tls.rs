//! `https://` endpoints: the client speaks TLS, verifies the server against the configured CA,
//! and refuses a server its roots do not vouch for. Certificates are made per test with the
//! `openssl` command line (a CA and a server certificate for 127.0.0.1).

use crate::support;

use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;

use orders_proto::v1::{CreateOrderRequest, Order};
use status_client::retry::RetryPolicy;
use status_client::{CallOptions, Client, Settings};
use support::{Scripted, start_tls};
use tonic::Code;

struct Certificates {
    ca: Vec<u8>,
    server: Vec<u8>,
    server_key: Vec<u8>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line is needed to make test certificates");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn make_certificates(dir: &Path) -> Certificates {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=status-client test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ];
    ca.extend(ec);
    openssl(dir, &ca);
    let mut csr = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    csr.extend(ec);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    Certificates {
        ca: read("ca.pem"),
        server: read("server.pem"),
        server_key: read("server.key"),
    }
}

fn scripted_order() -> Scripted {
    let script = Scripted::default();
    script.0.lock().unwrap().creates = VecDeque::from([Ok(Order {
        order_id: "over-tls".into(),
        ..Default::default()
    })]);
    script
}

fn settings(url: &str) -> Settings {
    Settings::from_endpoint_list(url)
        .unwrap()
        .with_token("t")
        .with_retry(RetryPolicy::no_retries())
}

#[tokio::test]
async fn https_endpoints_use_tls_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certificates(dir.path());
    let script = scripted_order();
    let addr = start_tls(script.clone(), &certs.server, &certs.server_key).await;

    let client =
        Client::new(settings(&format!("https://{addr}")).with_ca_certificate(certs.ca.clone()))
            .unwrap();
    let order = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(order.order_id, "over-tls");
    assert_eq!(script.0.lock().unwrap().create_calls.len(), 1);
}

#[tokio::test]
async fn a_server_the_roots_do_not_vouch_for_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certificates(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = make_certificates(other_dir.path()).ca;
    let script = scripted_order();
    let addr = start_tls(script.clone(), &certs.server, &certs.server_key).await;

    let client =
        Client::new(settings(&format!("https://{addr}")).with_ca_certificate(other_ca)).unwrap();
    let error = client
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error}");

    // Plain HTTP/2 to a TLS port does not get through either.
    let plain = Client::new(settings(&format!("http://{addr}"))).unwrap();
    let error = plain
        .create_order(CreateOrderRequest::default(), CallOptions::new())
        .await
        .unwrap_err();
    assert_ne!(error.code(), Code::Ok);
    assert!(
        script.0.lock().unwrap().create_calls.is_empty(),
        "nothing reached the server"
    );
}

#[test]
fn a_ca_certificate_that_is_not_pem_is_refused() {
    let settings =
        settings("https://127.0.0.1:1").with_ca_certificate(b"not a certificate".to_vec());
    assert!(matches!(
        settings.validate(),
        Err(status_client::SettingsError::InvalidCaCertificate)
    ));
}

#[test]
fn a_client_identity_that_is_not_pem_is_refused() {
    let not_a_key = settings("https://127.0.0.1:1").with_client_identity(
        b"-----BEGIN CERTIFICATE-----\n".to_vec(),
        b"secret".to_vec(),
    );
    assert!(matches!(
        not_a_key.validate(),
        Err(status_client::SettingsError::InvalidClientIdentity)
    ));
    // Its Debug form never shows the key.
    let shown = format!("{not_a_key:?}");
    assert!(!shown.contains("secret"), "{shown}");
}
