//! The TLS key log of the transport's own sessions, in the NSS key log
//! format Wireshark reads (`tls.keylog_file`).
//!
//! It exists for the escalation capture only (`tether-agent capture
//! --tls-keylog`): a transport logs keys only when it was built with
//! [`crate::Transport::with_key_log`], which nothing else calls. The keys
//! stay in memory, bounded, until the capture puts them in its bundle.

use std::sync::Mutex;

/// The most bytes of key log kept; later sessions are counted, not logged.
pub const MAX_KEY_LOG_BYTES: usize = 1024 * 1024;

/// An in-memory NSS key log (`LABEL CLIENT_RANDOM SECRET`, hex, one line
/// per secret).
#[derive(Debug, Default)]
pub struct KeyLogSink {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    text: String,
    dropped: usize,
}

impl KeyLogSink {
    pub fn new() -> KeyLogSink {
        KeyLogSink::default()
    }

    /// The key log so far.
    pub fn contents(&self) -> String {
        self.lock().text.clone()
    }

    /// How many secrets did not fit in [`MAX_KEY_LOG_BYTES`].
    pub fn dropped(&self) -> usize {
        self.lock().dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves whole lines only: each is
        // pushed in one call.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl rustls::KeyLog for KeyLogSink {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = format!(
            "{label} {} {}\n",
            hex::encode(client_random),
            hex::encode(secret)
        );
        let mut inner = self.lock();
        if inner.text.len() + line.len() > MAX_KEY_LOG_BYTES {
            inner.dropped += 1;
        } else {
            inner.text.push_str(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::KeyLog;

    use super::*;

    #[test]
    fn lines_are_nss_format_and_bounded() {
        let sink = KeyLogSink::new();
        sink.log("CLIENT_TRAFFIC_SECRET_0", &[1, 2], &[0xab]);
        assert_eq!(sink.contents(), "CLIENT_TRAFFIC_SECRET_0 0102 ab\n");
        let big = vec![0u8; 1024];
        for _ in 0..1000 {
            sink.log("L", &big, &big);
        }
        assert!(sink.contents().len() <= MAX_KEY_LOG_BYTES);
        assert!(sink.dropped() > 0);
    }
}
