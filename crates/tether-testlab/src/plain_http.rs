//! A plain HTTP server answering every GET with its current body (a CRL,
//! an OCSP-less CA's files), or never answering at all (a revocation
//! server behind a firewall that drops).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct PlainHttp {
    pub port: u16,
    body: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlainHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PlainHttp {
    /// Serves `body` on 127.0.0.1:`port`.
    pub async fn start_on(port: u16, body: Vec<u8>) -> PlainHttp {
        PlainHttp::serve(port, body, true).await
    }

    /// Accepts on 127.0.0.1:`port`, reads the request and never answers:
    /// what a client sees of a server whose replies are dropped.
    pub async fn silent_on(port: u16) -> PlainHttp {
        PlainHttp::serve(port, Vec::new(), false).await
    }

    async fn serve(port: u16, body: Vec<u8>, answer: bool) -> PlainHttp {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let body = Arc::new(Mutex::new(body));
        let shared = body.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let body = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    if !answer {
                        // Hold the connection open, silent, until the
                        // client gives up (or the lab is dropped).
                        let _ = s.read(&mut buf).await;
                        return;
                    }
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        PlainHttp { port, body, task }
    }

    pub fn set_body(&self, body: Vec<u8>) {
        *self.body.lock().unwrap_or_else(|p| p.into_inner()) = body;
    }
}
