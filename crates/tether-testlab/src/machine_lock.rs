//! A lock held across every process on this machine, for tests that change
//! the machine itself (installing packages, creating users), which two test
//! runs (two engineers, two nextest invocations) must never do at once.
//!
//! It is an abstract Unix socket bound under a fixed name: the kernel frees
//! it when the holder exits, even by SIGKILL, so a killed run never leaves a
//! stale lock behind.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::Duration;

/// Held while alive.
#[derive(Debug)]
pub struct MachineLock {
    _socket: UnixListener,
}

/// Waits (at most `within`) for the machine-wide lock `name`.
pub fn machine_lock(name: &str, within: Duration) -> MachineLock {
    let addr = SocketAddr::from_abstract_name(format!("tether-testlab-lock-{name}"))
        .expect("an abstract socket name fits");
    let step = Duration::from_millis(250);
    let attempts = within.as_millis() / step.as_millis() + 1;
    for _ in 0..attempts {
        match UnixListener::bind_addr(&addr) {
            Ok(socket) => return MachineLock { _socket: socket },
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => std::thread::sleep(step),
            Err(e) => panic!("cannot take the machine lock {name:?}: {e}"),
        }
    }
    panic!("another test run held the machine lock {name:?} for more than {within:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_and_freed_on_drop() {
        let held = machine_lock("self-test", Duration::from_secs(1));
        let addr = SocketAddr::from_abstract_name("tether-testlab-lock-self-test").expect("name");
        assert!(UnixListener::bind_addr(&addr).is_err());
        drop(held);
        drop(machine_lock("self-test", Duration::from_secs(1)));
    }
}
