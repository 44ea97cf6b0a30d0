use std::future::poll_fn;

use super::*;

fn stream_request(encoding: Option<&str>) -> http::Request<tonic::body::Body> {
    let mut request = http::Request::builder()
        .uri("/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets")
        .header("content-type", "application/grpc");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    request.body(tonic::body::Body::empty()).unwrap()
}

/// What `serve` answers when it must not be reached.
async fn not_served(
    _: Request<Streaming<DiscoveryRequest>>,
) -> Result<Response<BoxStream<DiscoveryResponse>>, Status> {
    Err(Status::internal("served"))
}

#[tokio::test]
async fn a_compressed_stream_is_refused_before_it_is_served() {
    let response = streaming(stream_request(Some("gzip")), not_served).await;
    let status = Status::from_header_map(response.headers()).expect("a trailers-only status");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("gzip"), "{status:?}");
    // Named as uncompressed, it is served (here: refused by the service itself).
    for encoding in [None, Some("identity")] {
        let response = streaming(stream_request(encoding), not_served).await;
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(
            status.code(),
            tonic::Code::Internal,
            "{encoding:?}: {status:?}"
        );
    }
}

#[tokio::test]
async fn responses_are_framed_one_by_one_then_the_status_ends_the_stream() {
    let first = DiscoveryResponse {
        nonce: "1".into(),
        ..DiscoveryResponse::default()
    };
    let responses: BoxStream<DiscoveryResponse> = Box::pin(tokio_stream::iter([
        Ok(first.clone()),
        Err(Status::permission_denied("not yours")),
    ]));
    let response = streaming(
        stream_request(None),
        |_: Request<Streaming<DiscoveryRequest>>| async move { Ok(Response::new(responses)) },
    )
    .await;
    assert_eq!(response.headers()["content-type"], "application/grpc");
    let mut body = response.into_body();
    let mut next = async || {
        poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .map(|frame| frame.expect("a frame, not an error"))
    };

    let data = next().await.unwrap().into_data().expect("a data frame");
    let encoded = prost::Message::encode_to_vec(&first);
    assert_eq!(data[0], 0, "not compressed");
    assert_eq!(
        u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize,
        encoded.len()
    );
    assert_eq!(&data[5..], &encoded[..]);

    let trailers = next()
        .await
        .unwrap()
        .into_trailers()
        .expect("the status as trailers");
    let status = Status::from_header_map(&trailers).unwrap();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "not yours");
    assert!(next().await.is_none(), "nothing after the status");
}
