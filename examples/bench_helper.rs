//! Helpers for `scripts/bench` (loopback only):
//!
//! - `bench_helper canned ADDR`: a trivial UDP responder answering every query with its
//!   question and one A record, one thread, no cache, no parsing beyond the question: the
//!   most a DNS server on one core can do against dnsperf on this machine (the ceiling).
//! - `bench_helper first-answer ADDR NAME -- COMMAND [ARGS...]`: starts COMMAND and asks
//!   ADDR for NAME (type A) every 2 ms until an answer that is not SERVFAIL comes back;
//!   prints the microseconds from start to that answer, then kills COMMAND.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use dnsward::dns::new_query;
use dnsward::dns::wire::{HEADER_LEN, skip_name};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("canned") if args.len() == 2 => canned(&args[1]),
        Some("first-answer") if args.len() > 4 && args[3] == "--" => {
            first_answer(&args[1], &args[2], &args[4..])
        }
        _ => Err("usage: bench_helper canned ADDR | first-answer ADDR NAME -- COMMAND...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_helper: {e}");
            ExitCode::from(2)
        }
    }
}

fn loopback(addr: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address"));
    }
    Ok(addr)
}

/// The canned answer: the question, then `<pointer to the name> A IN 300 127.0.0.1`.
fn canned(addr: &str) -> Result<(), String> {
    let socket = UdpSocket::bind(loopback(addr)?).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(600);
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let query = &buf[..len];
        let Ok(name_end) = skip_name(query, HEADER_LEN, true) else {
            continue;
        };
        let question_end = name_end + 4;
        if len < question_end || query[2] & 0x80 != 0 {
            continue;
        }
        out.clear();
        out.extend_from_slice(&query[..question_end]);
        out[2] |= 0x80; // QR
        out[3] = 0x80; // RA, NOERROR
        out[4..12].copy_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 127, 0, 0, 1]);
        let _ = socket.send_to(&out, peer);
    }
}

fn first_answer(addr: &str, name: &str, command: &[String]) -> Result<(), String> {
    let server = loopback(addr)?;
    let mut query = new_query(name, 1, false).ok_or("bad name")?;
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(2)))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", command[0]))?;
    let mut buf = [0u8; 4096];
    let mut id: u16 = 0;
    let outcome = loop {
        if started.elapsed() > Duration::from_secs(10) {
            break Err("no answer within 10 s".to_string());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("{} exited ({status})", command[0]));
        }
        id = id.wrapping_add(1);
        query[..2].copy_from_slice(&id.to_be_bytes());
        let _ = socket.send_to(&query, server);
        let deadline = Instant::now() + Duration::from_millis(2);
        let answered = loop {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if from == server && n >= 12 && buf[..2] == id.to_be_bytes() => {
                    break buf[3] & 0x0f != 2;
                }
                Ok(_) if Instant::now() < deadline => continue,
                _ => break false,
            }
        };
        if answered {
            break Ok(started.elapsed());
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    println!("{}", outcome?.as_micros());
    Ok(())
}
