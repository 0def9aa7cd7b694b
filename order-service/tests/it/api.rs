//! The unary RPCs of orders.v1 against a real server: happy paths, validation, the status
//! machine, optimistic concurrency, idempotency, pagination, auth, limits.

use crate::support;

use orders_proto::v1 as pb;
use pb::OrderStatus as S;
use std::collections::HashSet;
use support::*;
use tonic::Code;

#[tokio::test]
async fn create_get_list_and_update_an_order() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let created = client
        .create_order(authed(
            pb::CreateOrderRequest {
                request_id: "happy-1".into(),
                customer_id: "cust-1".into(),
                items: vec![item("A", 2, 150), item("B", 3, 1)],
                currency: "EUR".into(),
            },
            WRITER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.order_id.starts_with("ord_"));
    assert!(
        created
            .order_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    );
    assert_eq!(created.total_cents, 303);
    assert_eq!(created.status(), S::Pending);
    assert_eq!(created.version, 1);
    assert_eq!(created.create_time, created.update_time);
    assert!(created.create_time.is_some());

    let fetched = client
        .get_order(authed(
            pb::GetOrderRequest {
                order_id: created.order_id.clone(),
            },
            READER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);

    let listed = client
        .list_orders(authed(pb::ListOrdersRequest::default(), READER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders, vec![created.clone()]);
    assert_eq!(listed.next_page_token, "");

    let paid = set_status(&mut client, &created.order_id, S::Paid)
        .await
        .unwrap();
    assert_eq!(paid.status(), S::Paid);
    assert_eq!(paid.version, 2);
    assert!(paid.update_time.unwrap().seconds >= created.update_time.unwrap().seconds);
    assert_eq!(paid.create_time, created.create_time);
}

#[tokio::test]
async fn unknown_orders_are_not_found() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let missing = client
        .get_order(authed(
            pb::GetOrderRequest {
                order_id: "ord_does_not_exist".into(),
            },
            READER,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "ORDER_NOT_FOUND");
    let missing = set_status(&mut client, "ord_nope", S::Paid)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

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
async fn the_status_machine_allows_exactly_its_transitions() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let all = [S::Pending, S::Paid, S::Shipped, S::Delivered, S::Cancelled];
    let allowed = [
        (S::Pending, S::Paid),
        (S::Pending, S::Cancelled),
        (S::Paid, S::Shipped),
        (S::Paid, S::Cancelled),
        (S::Shipped, S::Delivered),
    ];
    // A path from PENDING to each status.
    let path_to = |status: S| -> Vec<S> {
        match status {
            S::Pending => vec![],
            S::Paid => vec![S::Paid],
            S::Shipped => vec![S::Paid, S::Shipped],
            S::Delivered => vec![S::Paid, S::Shipped, S::Delivered],
            S::Cancelled => vec![S::Cancelled],
            S::Unspecified => unreachable!(),
        }
    };
    for from in all {
        for to in all {
            let order = create(&mut client, "machine").await;
            for step in path_to(from) {
                set_status(&mut client, &order.order_id, step)
                    .await
                    .unwrap();
            }
            let before_version = 1 + path_to(from).len() as i64;
            let result = set_status(&mut client, &order.order_id, to).await;
            if from == to {
                let same = result.unwrap();
                assert_eq!(
                    same.version, before_version,
                    "{from:?} -> itself is a no-op"
                );
            } else if allowed.contains(&(from, to)) {
                let changed = result.unwrap();
                assert_eq!(
                    (changed.status(), changed.version),
                    (to, before_version + 1)
                );
            } else {
                let refused = result.unwrap_err();
                assert_eq!(
                    refused.code(),
                    Code::FailedPrecondition,
                    "{from:?} -> {to:?}"
                );
                assert_eq!(reason(&refused), "INVALID_TRANSITION");
            }
        }
    }
}

#[tokio::test]
async fn a_stale_expected_version_is_aborted() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let order = create(&mut client, "cas").await;
    let update = |expected_version: i64, status: S| pb::UpdateOrderStatusRequest {
        order_id: order.order_id.clone(),
        status: status as i32,
        expected_version,
        ..Default::default()
    };
    let paid = client
        .update_order_status(authed(update(1, S::Paid), WRITER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.version, 2);
    let stale = client
        .update_order_status(authed(update(1, S::Shipped), WRITER))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "VERSION_MISMATCH");
    let current = client
        .update_order_status(authed(update(2, S::Shipped), WRITER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.version, 3);
}

#[tokio::test]
async fn a_repeated_request_id_replays_the_first_response() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let first = client
        .create_order(authed(new_order("idem", "key-1"), WRITER))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .create_order(authed(new_order("idem", "key-1"), WRITER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);

    // Same key, different request.
    let reused = client
        .create_order(authed(new_order("someone-else", "key-1"), WRITER))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");

    // Keys are scoped to the principal: another caller's key-1 is its own.
    let other = client
        .create_order(authed(new_order("idem", "key-1"), OTHER_WRITER))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.order_id, first.order_id);

    // Updates replay too, even after the order moved on.
    let pay = pb::UpdateOrderStatusRequest {
        order_id: first.order_id.clone(),
        status: S::Paid as i32,
        request_id: "pay-1".into(),
        ..Default::default()
    };
    let paid = client
        .update_order_status(authed(pay.clone(), WRITER))
        .await
        .unwrap()
        .into_inner();
    set_status(&mut client, &first.order_id, S::Shipped)
        .await
        .unwrap();
    let replayed = client
        .update_order_status(authed(pay, WRITER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed, paid);

    let listed = client
        .list_orders(authed(
            pb::ListOrdersRequest {
                customer_id: "idem".into(),
                ..Default::default()
            },
            READER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 2, "one order per principal");
}

#[tokio::test]
async fn fifty_concurrent_duplicates_make_exactly_one_order() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let calls = (0..50).map(|_| {
        let mut client = pb::order_service_client::OrderServiceClient::new(channel.clone());
        tokio::spawn(async move {
            client
                .create_order(authed(new_order("dup", "same-key"), WRITER))
                .await
        })
    });
    let mut ids = HashSet::new();
    for call in futures::future::join_all(calls).await {
        match call.unwrap() {
            Ok(order) => {
                ids.insert(order.into_inner().order_id);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Aborted);
                assert_eq!(reason(&status), "REQUEST_IN_PROGRESS");
            }
        }
    }
    assert_eq!(ids.len(), 1);
    let mut client = server.client().await;
    let listed = client
        .list_orders(authed(
            pb::ListOrdersRequest {
                customer_id: "dup".into(),
                ..Default::default()
            },
            READER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.orders.len(), 1);
}

#[tokio::test]
async fn pagination_walks_every_page_with_filters_combined() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let mut expected = Vec::new();
    for i in 0..23 {
        let customer = if i % 2 == 0 { "even" } else { "odd" };
        let order = create(&mut client, customer).await;
        if i % 4 == 0 {
            set_status(&mut client, &order.order_id, S::Paid)
                .await
                .unwrap();
        }
        if customer == "even" && i % 4 != 0 {
            expected.push(order.order_id);
        }
    }
    assert_eq!(expected.len(), 6);
    let query = |page_token: String| pb::ListOrdersRequest {
        page_size: 2,
        page_token,
        status: S::Pending as i32,
        customer_id: "even".into(),
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_orders(authed(query(token), READER))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.orders.len() <= 2);
        for order in &page.orders {
            assert_eq!(
                (order.customer_id.as_str(), order.status()),
                ("even", S::Pending)
            );
        }
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected, "oldest first, each once");
    assert!(pages >= 3);

    // A token is bound to its filters.
    let first = client
        .list_orders(authed(query(String::new()), READER))
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .list_orders(authed(
            pb::ListOrdersRequest {
                customer_id: "odd".into(),
                ..query(first.next_page_token)
            },
            READER,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&refused), vec!["page_token"]);

    // Default page size is 50 and the last page has an empty token.
    let all = client
        .list_orders(authed(pb::ListOrdersRequest::default(), READER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.orders.len(), all.next_page_token.as_str()), (23, ""));
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
