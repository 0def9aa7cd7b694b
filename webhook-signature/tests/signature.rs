//! Signing and verification against independent HMAC implementations (RustCrypto's `hmac`, and
//! `openssl dgst` in a subprocess when it is installed), Standard Webhooks' published example,
//! rotation, tolerance and malformed headers.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use order_status_webhooks::{
    DEFAULT_TOLERANCE, Secret, VerifyError, WebhookHeaders, sign, signature_entry, verify,
};

/// The example in Standard Webhooks' specification and its reference libraries' tests.
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: i64 = 1_614_265_330;
const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn rustcrypto_entry(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2_11::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn headers<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> WebhookHeaders<'a> {
    WebhookHeaders {
        id,
        timestamp,
        signature,
    }
}

#[test]
fn the_specification_example_signs_and_verifies() {
    let secret: Secret = SPEC_SECRET.parse().unwrap();
    assert_eq!(
        sign(&[&secret], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
        SPEC_SIGNATURE
    );
    let ts = SPEC_TIMESTAMP.to_string();
    verify(
        &[&secret],
        &headers(SPEC_ID, &ts, SPEC_SIGNATURE),
        SPEC_BODY,
        SPEC_TIMESTAMP,
        DEFAULT_TOLERANCE,
    )
    .unwrap();
}

#[test]
fn signatures_equal_an_independent_hmac() {
    for (len, body) in [
        (24, &b""[..]),
        (32, &br#"{"type":"order.created","data":{}}"#[..]),
        (64, &[0u8, 255, 10, 13][..]),
    ] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let secret = Secret::from_bytes(bytes.clone()).unwrap();
        let expected = rustcrypto_entry(&bytes, "evt_01HX", 1_764_570_000, body);
        assert_eq!(
            signature_entry(&secret, "evt_01HX", 1_764_570_000, body),
            expected
        );
        // And the other way round: what the independent code signs, verify accepts.
        verify(
            &[&secret],
            &headers("evt_01HX", "1764570000", &expected),
            body,
            1_764_570_000,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
    }
}

#[test]
fn signatures_equal_openssl() {
    let installed = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        eprintln!("openssl is not installed: skipped (the RustCrypto comparison still ran)");
        return;
    }
    let secret = Secret::generate();
    let body = br#"{"type":"order.status_changed","timestamp":"2026-12-01T06:00:00Z"}"#;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{}", hex_of(secret.as_bytes())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"evt_7.1764570000.").unwrap();
    stdin.write_all(body).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        signature_entry(&secret, "evt_7", 1_764_570_000, body),
        format!("v1,{}", STANDARD.encode(&output.stdout))
    );
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_empty_v1_signature_never_verifies() {
    let secret = Secret::generate();
    for signature in ["v1,", "v1, v1,", "v1,=", "v1,AAAA", "v2,x v1,"] {
        assert_eq!(
            verify(
                &[&secret],
                &headers("evt_1", "100", signature),
                b"{}",
                100,
                DEFAULT_TOLERANCE
            ),
            Err(VerifyError::NoMatch),
            "{signature:?}"
        );
    }
    // Nor with an empty body and id-like content that an empty HMAC key might produce.
    assert_eq!(
        verify(
            &[&secret],
            &headers("x", "0", "v1,"),
            b"",
            0,
            DEFAULT_TOLERANCE
        ),
        Err(VerifyError::NoMatch)
    );
}

#[test]
fn any_secret_and_any_entry_may_match_during_rotation() {
    let old = Secret::generate();
    let new = Secret::generate();
    let body = b"{\"n\":1}";
    let both = sign(&[&new, &old], "evt_2", 1000, body);
    assert_eq!(both.split(' ').count(), 2, "{both}");
    // A receiver that knows only one of them accepts the doubly-signed delivery.
    for secrets in [vec![&old], vec![&new], vec![&old, &new]] {
        verify(
            &secrets,
            &headers("evt_2", "1000", &both),
            body,
            1000,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
    }
    // A receiver holding both accepts a delivery signed by either one alone.
    let only_old = sign(&[&old], "evt_2", 1000, body);
    verify(
        &[&new, &old],
        &headers("evt_2", "1000", &only_old),
        body,
        1000,
        DEFAULT_TOLERANCE,
    )
    .unwrap();
    // Entries of versions this code does not know are skipped, not errors.
    let with_v1a = format!("v1a,c2lnbmF0dXJl {only_old}");
    verify(
        &[&old],
        &headers("evt_2", "1000", &with_v1a),
        body,
        1000,
        DEFAULT_TOLERANCE,
    )
    .unwrap();
}

#[test]
fn a_changed_id_timestamp_body_or_secret_does_not_verify() {
    let secret = Secret::generate();
    let signature = sign(&[&secret], "evt_3", 500, b"body");
    let check = |secret: &Secret, id: &str, ts: &str, body: &[u8]| {
        verify(
            &[secret],
            &headers(id, ts, &signature),
            body,
            500,
            DEFAULT_TOLERANCE,
        )
    };
    assert_eq!(check(&secret, "evt_3", "500", b"body"), Ok(()));
    assert_eq!(
        check(&secret, "evt_4", "500", b"body"),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        check(&secret, "evt_3", "501", b"body"),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        check(&secret, "evt_3", "500", b"body "),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        check(&Secret::generate(), "evt_3", "500", b"body"),
        Err(VerifyError::NoMatch)
    );
}

#[test]
fn timestamps_outside_the_tolerance_are_refused_either_way() {
    let secret = Secret::generate();
    let at = |ts: i64, now: i64, tolerance: Duration| {
        let signature = sign(&[&secret], "evt_5", ts, b"{}");
        verify(
            &[&secret],
            &headers("evt_5", &ts.to_string(), &signature),
            b"{}",
            now,
            tolerance,
        )
    };
    let now = 1_764_570_000;
    assert_eq!(at(now - 300, now, DEFAULT_TOLERANCE), Ok(()));
    assert_eq!(at(now + 300, now, DEFAULT_TOLERANCE), Ok(()));
    assert_eq!(
        at(now - 301, now, DEFAULT_TOLERANCE),
        Err(VerifyError::TimestampOutOfTolerance {
            timestamp: now - 301,
            now,
            tolerance_secs: 300
        })
    );
    assert!(matches!(
        at(now + 301, now, DEFAULT_TOLERANCE),
        Err(VerifyError::TimestampOutOfTolerance { .. })
    ));
    assert_eq!(
        at(now - 30, now, Duration::from_secs(10))
            .unwrap_err()
            .to_string(),
        format!("timestamp {} is outside now ({now}) ± 10s", now - 30)
    );
}

#[test]
fn malformed_headers_are_errors_that_say_what() {
    let secret = Secret::generate();
    let good = sign(&[&secret], "evt_6", 10, b"");
    let check = |h: WebhookHeaders<'_>| verify(&[&secret], &h, b"", 10, DEFAULT_TOLERANCE);
    assert_eq!(check(headers("", "10", &good)), Err(VerifyError::EmptyId));
    for ts in ["", "ten", "1.5", "+10", " 10", "99999999999999999999"] {
        assert_eq!(
            check(headers("evt_6", ts, &good)),
            Err(VerifyError::MalformedTimestamp(ts.to_owned())),
            "{ts:?}"
        );
    }
    assert_eq!(
        check(headers("evt_6", "10", "sig-without-version")),
        Err(VerifyError::MalformedSignature(
            "sig-without-version".to_owned()
        ))
    );
    assert_eq!(
        check(headers("evt_6", "10", "")),
        Err(VerifyError::NoV1Signature)
    );
    assert_eq!(
        check(headers("evt_6", "10", "v1a,abc")),
        Err(VerifyError::NoV1Signature)
    );
    assert_eq!(
        verify(
            &[],
            &headers("evt_6", "10", &good),
            b"",
            10,
            DEFAULT_TOLERANCE
        ),
        Err(VerifyError::NoSecrets)
    );
    assert_eq!(
        check(headers("evt_6", "10", "v1,"))
            .unwrap_err()
            .to_string(),
        "no v1 signature matches"
    );
}
