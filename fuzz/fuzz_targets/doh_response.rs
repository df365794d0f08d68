//! A DoH upstream's HTTP response (status, content type, body in chunks) through dnsward's
//! response reading and answer checks. Input: status (2 bytes), content-type choice (1 byte;
//! past the list, the next byte gives the length of a raw header value), a chunk size byte,
//! then the body.
#![no_main]

use std::convert::Infallible;

use bytes::Bytes;
use dnsward::dns::{Answer, check_answer, new_query};
use dnsward::upstream::check_reply;
use dnsward::upstream::doh::read_response;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use http_body::Frame;
use http_body_util::StreamBody;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 4] = [
    "application/dns-message",
    "APPLICATION/DNS-MESSAGE",
    "application/dns-message; charset=utf-8",
    "text/html",
];

fuzz_target!(|data: &[u8]| {
    let [s0, s1, kind, rest @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*s0, *s1]) % 1000;
    let (content_type, rest) = match TYPES.get(usize::from(*kind)) {
        Some(t) => (HeaderValue::from_static(t), rest),
        None => {
            let Some((&n, rest)) = rest.split_first() else {
                return;
            };
            let n = usize::from(n).min(rest.len());
            let Ok(value) = HeaderValue::from_bytes(&rest[..n]) else {
                return;
            };
            (value, &rest[n..])
        }
    };
    let Some((&chunk, body)) = rest.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1) * 64;
    let Ok(builder) = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(())
    else {
        return;
    };
    let (parts, ()) = builder.into_parts();
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = body
        .chunks(chunk)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let response = Response::from_parts(parts, StreamBody::new(futures_util::stream::iter(frames)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let Ok(answer) = runtime.block_on(read_response(response)) else {
        return;
    };
    assert_eq!(answer.as_ref(), body, "the body is passed on whole");
    let query = new_query("a.test", 1, false).expect("valid name");
    let _ = check_reply(&query, answer.clone());
    if let Ok(parsed) = check_answer(&query, &answer) {
        let _ = Answer::new(&answer, &parsed);
    }
});
