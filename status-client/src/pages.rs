//! Paginated list calls as one stream of items: page after page is fetched as the stream is
//! read, each page one call with its own deadline, until a page comes without a next token.

use std::future::Future;

use futures::{Stream, TryStreamExt, stream};
use orders_proto::v1::{
    ListOrdersRequest, ListOrdersResponse, ListWebhookDeliveriesRequest,
    ListWebhookDeliveriesResponse, ListWebhookEndpointsRequest, ListWebhookEndpointsResponse,
    Order, WebhookDelivery, WebhookEndpoint,
};

use crate::error::ClientError;

/// A list request that can ask for the page after a token.
pub(crate) trait PageRequest: Clone + Send + 'static {
    /// The same request for the page `token` names.
    fn at_page(self, token: String) -> Self;
}

/// One page of a list response.
pub(crate) trait PageResponse {
    /// What the list holds.
    type Item: Send + 'static;
    /// The page's items and the token of the next page (empty on the last).
    fn into_page(self) -> (Vec<Self::Item>, String);
}

/// Every item of the list `first` starts, fetching each page with `fetch`.
pub(crate) fn every_item<Req, Resp, Fut>(
    first: Req,
    fetch: impl Fn(Req) -> Fut + Send + 'static,
) -> impl Stream<Item = Result<Resp::Item, ClientError>> + Send + 'static
where
    Req: PageRequest,
    Resp: PageResponse,
    Fut: Future<Output = Result<Resp, ClientError>> + Send + 'static,
{
    stream::try_unfold(Some(first), move |next| {
        let fetching = next.map(|request| (request.clone(), fetch(request)));
        async move {
            let Some((request, page)) = fetching else {
                return Ok::<_, ClientError>(None);
            };
            let (items, token) = page.await?.into_page();
            let following = (!token.is_empty()).then(|| request.at_page(token));
            Ok(Some((stream::iter(items.into_iter().map(Ok)), following)))
        }
    })
    .try_flatten()
}

macro_rules! paged {
    ($request:ty, $response:ty, $items:ident: $item:ty) => {
        impl PageRequest for $request {
            fn at_page(self, token: String) -> Self {
                Self {
                    page_token: token,
                    ..self
                }
            }
        }

        impl PageResponse for $response {
            type Item = $item;
            fn into_page(self) -> (Vec<$item>, String) {
                (self.$items, self.next_page_token)
            }
        }
    };
}

paged!(ListOrdersRequest, ListOrdersResponse, orders: Order);
paged!(ListWebhookEndpointsRequest, ListWebhookEndpointsResponse, endpoints: WebhookEndpoint);
paged!(ListWebhookDeliveriesRequest, ListWebhookDeliveriesResponse, deliveries: WebhookDelivery);
