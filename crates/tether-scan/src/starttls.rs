//! The clear-text exchanges that upgrade a connection to TLS: SMTP, IMAP,
//! POP3, LDAP (the StartTLS extended operation) and PostgreSQL
//! (SSLRequest). The caller bounds the time; lines and replies are bounded
//! here, and bytes the server sends past its "go ahead" are refused (they
//! would be read as TLS, the STARTTLS injection attack).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::spec::Starttls;

/// The longest reply line read.
const MAX_LINE: usize = 4_096;
/// The most lines of one reply (an EHLO lists extensions).
const MAX_LINES: usize = 64;

/// Why the upgrade did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeError {
    /// The server speaks the protocol but will not upgrade (what it said).
    Declined(String),
    /// The server does not speak the protocol (the first bytes it sent).
    NotProtocol(String),
    /// The connection broke, or a reply was too long.
    Io(String),
}

/// Printable text of hostile bytes, at most 120 characters.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(120)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

struct Lines<'a, S> {
    io: &'a mut S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> Lines<'_, S> {
    async fn line(&mut self) -> Result<String, UpgradeError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            if self.buf.len() > MAX_LINE {
                return Err(UpgradeError::Io(format!(
                    "a reply line longer than {MAX_LINE} bytes"
                )));
            }
            let mut chunk = [0u8; 512];
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|e| UpgradeError::Io(e.to_string()))?;
            if n == 0 {
                return Err(UpgradeError::Io(if self.buf.is_empty() {
                    "the server closed the connection".to_owned()
                } else {
                    format!(
                        "the server closed the connection after {:?}",
                        printable(&self.buf)
                    )
                }));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A reply of one or more lines, the last of which `done` accepts.
    async fn reply(&mut self, done: impl Fn(&str) -> bool) -> Result<Vec<String>, UpgradeError> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await?;
            let last = done(&l);
            lines.push(l);
            if last {
                return Ok(lines);
            }
            if lines.len() >= MAX_LINES {
                return Err(UpgradeError::Io(format!(
                    "a reply of more than {MAX_LINES} lines"
                )));
            }
        }
    }

    fn nothing_left(&self) -> Result<(), UpgradeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(UpgradeError::Declined(format!(
                "the server sent {} bytes after agreeing to start TLS (refused: STARTTLS injection)",
                self.buf.len()
            )))
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> Result<(), UpgradeError> {
    io.write_all(bytes)
        .await
        .map_err(|e| UpgradeError::Io(e.to_string()))?;
    io.flush()
        .await
        .map_err(|e| UpgradeError::Io(e.to_string()))
}

/// Runs the protocol's upgrade; on `Ok` the next bytes are TLS.
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    proto: Starttls,
) -> Result<(), UpgradeError> {
    match proto {
        Starttls::Postgres => return postgres(io).await,
        Starttls::Ldap => return ldap(io).await,
        _ => {}
    }
    let mut r = Lines {
        io,
        buf: Vec::new(),
    };
    match proto {
        Starttls::Smtp => {
            // A reply's last line has a space after its code: "250 OK".
            // Anything else (not a code) ends the reply too, so a server
            // that is not SMTP is named instead of waited on.
            let last = |l: &str| {
                let b = l.as_bytes();
                b.len() < 4 || !b[..3].iter().all(u8::is_ascii_digit) || b[3] != b'-'
            };
            let greeting = r.reply(last).await?;
            let first = greeting.first().cloned().unwrap_or_default();
            if !first.starts_with("220") {
                return Err(UpgradeError::NotProtocol(printable(first.as_bytes())));
            }
            send(r.io, b"EHLO tether-scan\r\n").await?;
            let ehlo = r.reply(last).await?;
            if !ehlo
                .iter()
                .any(|l| l.to_ascii_uppercase().contains("STARTTLS"))
            {
                return Err(UpgradeError::Declined(
                    "the server does not offer STARTTLS in its EHLO reply".to_owned(),
                ));
            }
            send(r.io, b"STARTTLS\r\n").await?;
            let go = r.reply(last).await?;
            match go.last() {
                Some(l) if l.starts_with("220") => {}
                other => {
                    return Err(UpgradeError::Declined(printable(
                        other.map(String::as_bytes).unwrap_or_default(),
                    )));
                }
            }
        }
        Starttls::Imap => {
            let greeting = r.line().await?;
            if !greeting.starts_with("* OK") && !greeting.starts_with("* PREAUTH") {
                return Err(UpgradeError::NotProtocol(printable(greeting.as_bytes())));
            }
            send(r.io, b"a1 STARTTLS\r\n").await?;
            let go = r.reply(|l| l.starts_with("a1 ")).await?;
            match go.last() {
                Some(l) if l.starts_with("a1 OK") => {}
                other => {
                    return Err(UpgradeError::Declined(printable(
                        other.map(String::as_bytes).unwrap_or_default(),
                    )));
                }
            }
        }
        Starttls::Pop3 => {
            let greeting = r.line().await?;
            if !greeting.starts_with("+OK") {
                return Err(UpgradeError::NotProtocol(printable(greeting.as_bytes())));
            }
            send(r.io, b"STLS\r\n").await?;
            let go = r.line().await?;
            if !go.starts_with("+OK") {
                return Err(UpgradeError::Declined(printable(go.as_bytes())));
            }
        }
        Starttls::Ldap | Starttls::Postgres => {}
    }
    r.nothing_left()
}

async fn postgres<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<(), UpgradeError> {
    // SSLRequest: length 8, code 80877103.
    send(io, &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    let mut answer = [0u8; 1];
    io.read_exact(&mut answer)
        .await
        .map_err(|e| UpgradeError::Io(e.to_string()))?;
    match answer[0] {
        b'S' => Ok(()),
        b'N' => Err(UpgradeError::Declined(
            "PostgreSQL answered N: SSL is off on this server".to_owned(),
        )),
        b'E' => Err(UpgradeError::Declined(
            "PostgreSQL answered the SSLRequest with an error".to_owned(),
        )),
        other => Err(UpgradeError::NotProtocol(printable(&[other]))),
    }
}

/// The LDAP StartTLS extended request (OID 1.3.6.1.4.1.1466.20037) and a
/// check of its result code.
async fn ldap<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<(), UpgradeError> {
    const OID: &[u8] = b"1.3.6.1.4.1.1466.20037";
    let mut ext = vec![0x80, OID.len() as u8];
    ext.extend_from_slice(OID);
    let mut op = vec![0x77, ext.len() as u8];
    op.extend_from_slice(&ext);
    let mut msg = vec![0x02, 0x01, 0x01];
    msg.extend_from_slice(&op);
    let mut req = vec![0x30, msg.len() as u8];
    req.extend_from_slice(&msg);
    send(io, &req).await?;
    // The response: SEQUENCE { messageID, [APPLICATION 24] { resultCode … } }.
    let mut head = [0u8; 2];
    io.read_exact(&mut head)
        .await
        .map_err(|e| UpgradeError::Io(e.to_string()))?;
    if head[0] != 0x30 {
        return Err(UpgradeError::NotProtocol(printable(&head)));
    }
    let len = if head[1] < 0x80 {
        usize::from(head[1])
    } else {
        let n = usize::from(head[1] & 0x7f);
        if n == 0 || n > 3 {
            return Err(UpgradeError::NotProtocol(
                "an LDAP length this scanner does not read".to_owned(),
            ));
        }
        let mut b = [0u8; 3];
        io.read_exact(&mut b[..n])
            .await
            .map_err(|e| UpgradeError::Io(e.to_string()))?;
        b[..n]
            .iter()
            .fold(0usize, |acc, x| (acc << 8) | usize::from(*x))
    };
    if len > MAX_LINE {
        return Err(UpgradeError::Io(format!("an LDAP response of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body)
        .await
        .map_err(|e| UpgradeError::Io(e.to_string()))?;
    // Skip the message ID (INTEGER), expect the ExtendedResponse.
    let id_len = usize::from(*body.get(1).unwrap_or(&0));
    let at = 2 + id_len;
    if body.first() != Some(&0x02) || body.get(at) != Some(&0x78) {
        return Err(UpgradeError::NotProtocol(
            "an LDAP reply that is not an ExtendedResponse".to_owned(),
        ));
    }
    // [APPLICATION 24] len, then ENUMERATED (0x0a) 1 byte resultCode.
    let rest = body.get(at + 2..).unwrap_or_default();
    match rest {
        [0x0a, 0x01, 0, ..] => Ok(()),
        [0x0a, 0x01, code, ..] => Err(UpgradeError::Declined(format!(
            "LDAP StartTLS refused with result code {code}"
        ))),
        _ => Err(UpgradeError::NotProtocol(
            "a malformed LDAP ExtendedResponse".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted peer: what it says, in order, whatever it is sent.
    async fn against(script: &'static [u8], proto: Starttls) -> Result<(), UpgradeError> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            server.write_all(script).await.ok();
            let mut sink = vec![0u8; 4096];
            // Keep reading until the client is done.
            while let Ok(n) = server.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        let r = upgrade(&mut client, proto).await;
        drop(client);
        peer.await.ok();
        r
    }

    #[tokio::test]
    async fn replies_are_read_per_protocol() {
        assert_eq!(
            against(
                b"220 mx ESMTP\r\n250-mx\r\n250 STARTTLS\r\n220 go\r\n",
                Starttls::Smtp
            )
            .await,
            Ok(())
        );
        assert!(matches!(
            against(b"220 mx\r\n250-mx\r\n250 SIZE 10\r\n", Starttls::Smtp).await,
            Err(UpgradeError::Declined(_))
        ));
        assert!(matches!(
            against(b"SSH-2.0-x\r\n", Starttls::Smtp).await,
            Err(UpgradeError::NotProtocol(_))
        ));
        assert_eq!(
            against(b"* OK ready\r\na1 OK begin\r\n", Starttls::Imap).await,
            Ok(())
        );
        assert!(matches!(
            against(b"* OK ready\r\na1 BAD no\r\n", Starttls::Imap).await,
            Err(UpgradeError::Declined(_))
        ));
        assert_eq!(
            against(b"+OK pop\r\n+OK go\r\n", Starttls::Pop3).await,
            Ok(())
        );
        assert_eq!(against(b"S", Starttls::Postgres).await, Ok(()));
        assert!(matches!(
            against(b"N", Starttls::Postgres).await,
            Err(UpgradeError::Declined(_))
        ));
        assert_eq!(
            against(
                b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x00\x04\x00\x04\x00",
                Starttls::Ldap
            )
            .await,
            Ok(())
        );
        assert!(matches!(
            against(
                b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x02\x04\x00\x04\x00",
                Starttls::Ldap
            )
            .await,
            Err(UpgradeError::Declined(_))
        ));
    }

    #[tokio::test]
    async fn injected_bytes_after_the_go_ahead_are_refused() {
        let r = against(
            b"220 mx\r\n250 STARTTLS\r\n220 go\r\n\x16\x03\x01",
            Starttls::Smtp,
        )
        .await;
        assert!(matches!(r, Err(UpgradeError::Declined(m)) if m.contains("injection")));
    }

    #[tokio::test]
    async fn endless_replies_are_bounded() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let junk = [b'2'; 1024];
            while server.write_all(&junk).await.is_ok() {}
        });
        let r = upgrade(&mut client, Starttls::Smtp).await;
        assert!(matches!(r, Err(UpgradeError::Io(m)) if m.contains("longer than")));
    }
}
