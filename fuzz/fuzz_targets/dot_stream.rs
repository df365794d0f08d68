//! The byte stream a DoT upstream sends back, through dnsward's framing and ID matching
//! (the TLS layer aside). Input: one byte picking how many queries wait (1 to 4), then the
//! server's stream. In that stream a frame whose ID is 00 0N answers the N-th query (the
//! harness writes the ID the connection really used, which is random); any other ID is sent
//! as is. Every query must end, with an answer carrying its own ID or with an error.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dnsward::dns::{Answer, check_answer, new_query, wire};
use dnsward::upstream::check_reply;
use dnsward::upstream::dot::Pipeline;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

fuzz_target!(|data: &[u8]| {
    let Some((&count, stream)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 4) + 1;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, mut server) = duplex(1 << 17);
        let pipeline = Arc::new(Pipeline::over(client, Duration::from_secs(60)));
        let queries: Vec<Vec<u8>> = (0..count)
            .map(|i| new_query(&format!("q{i}.test"), 1, false).expect("valid name"))
            .collect();
        let waiting: Vec<_> = queries
            .iter()
            .map(|q| {
                let (pipeline, q) = (pipeline.clone(), q.clone());
                tokio::spawn(async move { pipeline.exchange(&q).await })
            })
            .collect();
        // The IDs the connection chose, by query.
        let mut ids = vec![0u16; count];
        for _ in 0..count {
            let mut len = [0u8; 2];
            server.read_exact(&mut len).await.expect("query frame");
            let mut frame = vec![0; usize::from(u16::from_be_bytes(len))];
            server.read_exact(&mut frame).await.expect("query frame");
            let question = wire::parse(&frame)
                .expect("our query parses")
                .question
                .unwrap();
            let label = &frame[question.name.start + 2..question.name.start + 3];
            let index = usize::from(label[0] - b'0');
            ids[index] = u16::from_be_bytes([frame[0], frame[1]]);
        }
        let stream = with_real_ids(stream, &ids);
        server.write_all(&stream).await.expect("pipe open");
        drop(server);
        for (i, task) in waiting.into_iter().enumerate() {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("every query ends once the stream ends")
                .expect("no panic");
            let Ok(answer) = result else { continue };
            assert_eq!(
                u16::from_be_bytes([answer[0], answer[1]]),
                ids[i],
                "an answer goes to the query with its ID"
            );
            let _ = check_reply(&queries[i], Bytes::clone(&answer));
            if let Ok(parsed) = check_answer(&queries[i], &answer) {
                let _ = Answer::new(&answer, &parsed);
            }
        }
    });
});

/// `stream` with the ID of every whole frame whose ID is 00 0N (N < ids.len()) replaced by
/// `ids[N]`; everything else, including a trailing partial frame, unchanged.
fn with_real_ids(stream: &[u8], ids: &[u16]) -> Vec<u8> {
    let mut out = stream.to_vec();
    let mut at = 0;
    while at + 2 <= out.len() {
        let len = usize::from(u16::from_be_bytes([out[at], out[at + 1]]));
        let body = at + 2;
        if body + len > out.len() {
            break;
        }
        if len >= 2 && out[body] == 0 && usize::from(out[body + 1]) < ids.len() {
            let id = ids[usize::from(out[body + 1])];
            out[body..body + 2].copy_from_slice(&id.to_be_bytes());
        }
        at = body + len;
    }
    out
}
