//! The unary RPCs of orders.v1 against a real server, beyond what the conformance suite runs on
//! every backend: validation, auth, limits.

use crate::support;

use orders_proto::v1 as pb;
use pb::OrderStatus as S;
use support::*;
use tonic::Code;

#[tokio::test]
async fn every_validation_rule_is_reported_with_its_field_path() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let create = |request: pb::CreateOrderRequest| {
        let mut client = client.clone();
        async move {
            client
                .create_order(authed(request, WRITER))
                .await
                .unwrap_err()
        }
    };
    let valid = new_order("c", "");

    // Each rule alone.
    let cases: Vec<(pb::CreateOrderRequest, &str)> = vec![
        (
            pb::CreateOrderRequest {
                customer_id: "".into(),
                ..valid.clone()
            },
            "customer_id",
        ),
        (
            pb::CreateOrderRequest {
                customer_id: "x".repeat(129),
                ..valid.clone()
            },
            "customer_id",
        ),
        (
            pb::CreateOrderRequest {
                items: vec![],
                ..valid.clone()
            },
            "items",
        ),
        (
            pb::CreateOrderRequest {
                items: vec![item("A", 1, 1); 101],
                ..valid.clone()
            },
            "items",
        ),
        (
            pb::CreateOrderRequest {
                items: vec![item("", 1, 1)],
                ..valid.clone()
            },
            "items[0].sku",
        ),
        (
            pb::CreateOrderRequest {
                items: vec![item(&"s".repeat(65), 1, 1)],
                ..valid.clone()
            },
            "items[0].sku",
        ),
        (
            pb::CreateOrderRequest {
                items: vec![item("A", 0, 1)],
                ..valid.clone()
            },
            "items[0].quantity",
        ),
        (
            pb::CreateOrderRequest {
                items: vec![item("A", 10_001, 1)],
                ..valid.clone()
            },
            "items[0].quantity",
        ),
        (
            pb::CreateOrderRequest {
                items: vec![item("A", 1, -1)],
                ..valid.clone()
            },
            "items[0].unit_price_cents",
        ),
        (
            pb::CreateOrderRequest {
                currency: "eur".into(),
                ..valid.clone()
            },
            "currency",
        ),
        (
            pb::CreateOrderRequest {
                currency: "EURO".into(),
                ..valid.clone()
            },
            "currency",
        ),
        (
            pb::CreateOrderRequest {
                currency: "".into(),
                ..valid.clone()
            },
            "currency",
        ),
        (
            pb::CreateOrderRequest {
                items: vec![item("A", 10_000, i64::MAX / 5_000)],
                ..valid.clone()
            },
            "items",
        ),
        (
            pb::CreateOrderRequest {
                request_id: "has space".into(),
                ..valid.clone()
            },
            "request_id",
        ),
        (
            pb::CreateOrderRequest {
                request_id: "k".repeat(129),
                ..valid.clone()
            },
            "request_id",
        ),
    ];
    for (request, field) in cases {
        let refused = create(request.clone()).await;
        assert_eq!(bad_fields(&refused), vec![field.to_owned()], "{request:?}");
        assert_eq!(reason(&refused), "VALIDATION_FAILED");
    }

    // Boundaries that are valid.
    let mut ok = client.clone();
    ok.create_order(authed(
        pb::CreateOrderRequest {
            customer_id: "x".repeat(128),
            items: vec![item(&"s".repeat(64), 10_000, 0); 100],
            request_id: "k".repeat(128),
            ..valid.clone()
        },
        WRITER,
    ))
    .await
    .unwrap();

    // Several violations in one request are reported together.
    let refused = create(pb::CreateOrderRequest {
        request_id: "bad id".into(),
        customer_id: "".into(),
        items: vec![item("A", 1, 1), item("", 0, -5)],
        currency: "usd".into(),
    })
    .await;
    assert_eq!(
        bad_fields(&refused),
        vec![
            "currency",
            "customer_id",
            "items[1].quantity",
            "items[1].sku",
            "items[1].unit_price_cents",
            "request_id"
        ]
    );

    // List and update validation.
    let refused = client
        .list_orders(authed(
            pb::ListOrdersRequest {
                page_size: -1,
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            READER,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&refused), vec!["page_size", "page_token"]);
    let refused = client
        .update_order_status(authed(
            pb::UpdateOrderStatusRequest {
                order_id: "".into(),
                status: S::Unspecified as i32,
                expected_version: -2,
                ..Default::default()
            },
            WRITER,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        bad_fields(&refused),
        vec!["expected_version", "order_id", "status"]
    );
}

#[tokio::test]
async fn calls_need_a_known_token_with_the_right_scope() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let get = || pb::GetOrderRequest {
        order_id: "ord_x".into(),
    };

    let missing = client.get_order(get()).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = client
        .get_order(authed(get(), "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let mut malformed = tonic::Request::new(get());
    malformed
        .metadata_mut()
        .insert("authorization", READER.parse().unwrap());
    assert_eq!(
        client.get_order(malformed).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let denied = client
        .create_order(authed(new_order("c", ""), READER))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "MISSING_SCOPE");
    // The refused write had no effect.
    let listed = client
        .list_orders(authed(pb::ListOrdersRequest::default(), READER))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.orders.is_empty());

    // Health needs no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn an_oversized_request_is_resource_exhausted() {
    let server = TestServer::start_with(&["--max-message-bytes", "2048"]).await;
    let mut client = server.client().await;
    let refused = client
        .create_order(authed(
            pb::CreateOrderRequest {
                customer_id: "big".into(),
                items: vec![item(&"s".repeat(60), 1, 1); 100],
                ..new_order("big", "")
            },
            WRITER,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "MESSAGE_TOO_LARGE");
}
