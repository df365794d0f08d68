//! Service-manager readiness: the `sd_notify` protocol, spoken directly.
//!
//! When systemd starts dnsward with `Type=notify`, it sets `NOTIFY_SOCKET` to a Unix datagram
//! socket (a path, or an abstract name written with a leading `@`) and waits for `READY=1`
//! before starting the units ordered after it (`nss-lookup.target`). dnsward sends it once its
//! sockets are bound and its resolver is built, and `STOPPING=1` when it begins to shut down.
//! Without `NOTIFY_SOCKET` nothing is sent. The protocol is one datagram of `KEY=VALUE` lines
//! (sd_notify(3)); a crate would add nothing but a dependency.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::warn;

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `"READY=1"`) to the service manager. `Ok(false)` when there is none.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(target) => notify_to(&target, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the socket `target` names (a path, or `@` and an abstract name).
pub fn notify_to(target: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    let target = target.as_bytes();
    let addr = match target.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&target[1..])?,
        Some(b'/') => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(target))?,
        // systemd also knows vsock: addresses; dnsward is never started that way.
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "unsupported {NOTIFY_SOCKET} {:?}",
                    String::from_utf8_lossy(target)
                ),
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Tells the service manager that dnsward is serving.
pub fn ready() {
    send_logged("READY=1\nSTATUS=Serving DNS");
}

/// Tells the service manager that dnsward is shutting down.
pub fn stopping() {
    send_logged("STOPPING=1");
}

fn send_logged(state: &str) {
    if let Err(error) = notify(state) {
        warn!(%error, state, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("dnsward-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let mut buf = [0u8; 256];
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("dnsward-notify-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(notify_to(OsStr::new("vsock:2:1234"), "READY=1").is_err());
        assert!(notify_to(path.with_extension("missing").as_os_str(), "READY=1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
