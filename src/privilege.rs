//! Dropping root after binding port 53.
//!
//! Started as root (an init script, OpenWrt's procd), dnsward binds its sockets, builds its
//! resolver (reading CA files and the hosts file), then switches to an unprivileged user for
//! good: supplementary groups cleared, then the group, then the user. setgid/setuid go through
//! the C library, which applies them to every thread of the process. Running on as root is
//! allowed but logged as a warning. Under systemd the unit's `DynamicUser=` does this job and
//! dnsward never starts as root.

use nix::unistd::{Gid, Uid, User, getuid, setgid, setgroups, setuid};
use thiserror::Error;
use tracing::{info, warn};

/// Why the process could not switch users.
#[derive(Debug, Error)]
pub enum PrivilegeError {
    /// No such user in the password database.
    #[error("user {0:?} does not exist")]
    NoSuchUser(String),
    /// The password database could not be read.
    #[error("cannot look up user {user:?}: {source}")]
    Lookup {
        /// The user.
        user: String,
        /// Why.
        source: nix::Error,
    },
    /// A set*id call failed.
    #[error("cannot switch to user {user:?} ({step}): {source}")]
    Switch {
        /// The user.
        user: String,
        /// Which call.
        step: &'static str,
        /// Why.
        source: nix::Error,
    },
    /// The switch seemed to work, yet root could be regained.
    #[error("switched to user {0:?}, but could still become root again; refusing to run")]
    Regained(String),
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Switched from root to the named user.
    Dropped {
        /// Its user ID.
        uid: u32,
        /// Its group ID.
        gid: u32,
    },
    /// Not root, so nothing to drop.
    NotRoot,
    /// Root, and no user named: still root.
    StillRoot,
}

/// Switches to `user` if the process runs as root (see the module doc).
pub fn drop_privileges(user: Option<&str>) -> Result<Outcome, PrivilegeError> {
    if !getuid().is_root() && !nix::unistd::geteuid().is_root() {
        if let Some(name) = user {
            info!(
                user = name,
                uid = getuid().as_raw(),
                "not started as root; not switching users"
            );
        }
        return Ok(Outcome::NotRoot);
    }
    let Some(name) = user else {
        warn!(
            "running as root; set `user` in the configuration or pass --user NAME to drop \
             privileges once the sockets are bound"
        );
        return Ok(Outcome::StillRoot);
    };
    let entry = User::from_name(name)
        .map_err(|source| PrivilegeError::Lookup {
            user: name.to_string(),
            source,
        })?
        .ok_or_else(|| PrivilegeError::NoSuchUser(name.to_string()))?;
    let (uid, gid): (Uid, Gid) = (entry.uid, entry.gid);
    let fail = |step| {
        move |source| PrivilegeError::Switch {
            user: name.to_string(),
            step,
            source,
        }
    };
    setgroups(&[gid]).map_err(fail("setgroups"))?;
    setgid(gid).map_err(fail("setgid"))?;
    setuid(uid).map_err(fail("setuid"))?;
    if !uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::Regained(name.to_string()));
    }
    info!(
        user = name,
        uid = uid.as_raw(),
        gid = gid.as_raw(),
        "dropped root privileges"
    );
    Ok(Outcome::Dropped {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}
