//! The unary RPCs on every backend: create, get, list with filters and page tokens, the status
//! machine, optimistic concurrency, idempotent replay and key reuse, concurrent duplicates and
//! concurrent updates of one version.

use crate::support;

use orders_proto::v1 as pb;
use pb::OrderStatus as S;
use std::collections::HashSet;
use support::*;
use tonic::Code;

conformance! {
    async fn create_get_list_and_update_an_order(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
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

    async fn unknown_orders_are_not_found(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
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

    async fn the_status_machine_allows_exactly_its_transitions(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
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

    async fn a_stale_expected_version_is_aborted(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
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

    async fn a_repeated_request_id_replays_the_first_response(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
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

    async fn fifty_concurrent_duplicates_make_exactly_one_order(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
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

    async fn pagination_walks_every_page_with_filters_combined(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
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

    #[multi_thread]
    async fn concurrent_updates_of_one_version_have_exactly_one_winner(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let channel = server.channel().await;
        let order = create(&mut server.client().await, "race").await;
        let calls = (0..20).map(|i| {
            let mut client = pb::order_service_client::OrderServiceClient::new(channel.clone());
            let target = if i % 2 == 0 { S::Paid } else { S::Cancelled };
            let request = pb::UpdateOrderStatusRequest {
                order_id: order.order_id.clone(),
                status: target as i32,
                expected_version: 1,
                request_id: format!("race-{i}"),
                ..Default::default()
            };
            tokio::spawn(async move {
                client
                    .update_order_status(authed(request, WRITER))
                    .await
                    .map(tonic::Response::into_inner)
            })
        });
        let mut winners = Vec::new();
        for call in futures::future::join_all(calls).await {
            match call.unwrap() {
                Ok(updated) => winners.push(updated),
                Err(status) => {
                    assert_eq!(status.code(), Code::Aborted, "{status:?}");
                    assert_eq!(reason(&status), "VERSION_MISMATCH");
                }
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        assert_eq!(winners[0].version, 2);
        let current = server
            .client()
            .await
            .get_order(authed(
                pb::GetOrderRequest {
                    order_id: order.order_id.clone(),
                },
                READER,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(current, winners[0]);
    }

    async fn a_restarted_server_keeps_orders_keys_and_the_event_log(backend: Backend) {
        let db = backend.database().await;
        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
        let created = client
            .create_order(authed(new_order("durable", "restart-key"), WRITER))
            .await
            .unwrap()
            .into_inner();
        let paid = set_status(&mut client, &created.order_id, S::Paid)
            .await
            .unwrap();
        server.stop().await;

        let server = TestServer::start_on(&db, &[]).await;
        let mut client = server.client().await;
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
        assert_eq!(fetched, paid);
        // The idempotency record survived with the response it stores.
        let replayed = client
            .create_order(authed(new_order("durable", "restart-key"), WRITER))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replayed, created);
        let reused = client
            .create_order(authed(new_order("another", "restart-key"), WRITER))
            .await
            .unwrap_err();
        assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");
        // The event log goes on after the stored events.
        let mut order_watch = client
            .watch_orders(authed(
                pb::WatchOrdersRequest {
                    order_id: created.order_id.clone(),
                    after_sequence: 0,
                },
                READER,
            ))
            .await
            .unwrap()
            .into_inner();
        let snapshot = order_watch.message().await.unwrap().unwrap();
        assert_eq!(snapshot.order.as_ref(), Some(&paid));
        let shipped = set_status(&mut client, &created.order_id, S::Shipped)
            .await
            .unwrap();
        let live = order_watch.message().await.unwrap().unwrap();
        assert_eq!(live.order.as_ref(), Some(&shipped));
        assert!(live.sequence > snapshot.sequence);
        let listed = client
            .list_orders(authed(pb::ListOrdersRequest::default(), READER))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.orders, vec![shipped]);
    }
}
