//! A fake NTP server on UDP loopback answering with this host's real time
//! plus an offset. The reply is built here, independently of the doctor's
//! SNTP code, so the two cannot share a mistake.

use std::net::SocketAddr;

pub struct Ntp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Ntp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Ntp {
    pub async fn start(offset: time::Duration) -> Ntp {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind udp");
        let addr = sock.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                if n < 48 {
                    continue;
                }
                let now = time::OffsetDateTime::now_utc() + offset;
                let secs = (now.unix_timestamp() + 2_208_988_800) as u64;
                let frac = (u64::from(now.nanosecond()) << 32) / 1_000_000_000;
                let ts = ((secs << 32) | frac).to_be_bytes();
                let mut reply = [0u8; 48];
                reply[0] = 0x24; // v4, server
                reply[1] = 1; // stratum 1
                reply[24..32].copy_from_slice(&buf[40..48]);
                reply[32..40].copy_from_slice(&ts);
                reply[40..48].copy_from_slice(&ts);
                let _ = sock.send_to(&reply, peer).await;
            }
        });
        Ntp { addr, task }
    }
}
