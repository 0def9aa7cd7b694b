//! A TCP proxy that can lose responses: put between a client and order-service, it forwards
//! both ways until told to hold what the server sends, then cuts every connection, dropping the
//! held bytes. The server has done the work; the client never hears of it — the "lost
//! response" that idempotency keys exist for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct LossyProxy {
    addr: SocketAddr,
    control: Arc<Control>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Control {
    /// While set, bytes from the server are swallowed instead of forwarded.
    hold: AtomicBool,
    /// Bumped by `cut`: every connection opened before the bump closes.
    generation: watch::Sender<u64>,
}

impl LossyProxy {
    /// Listens on a free port and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control {
            hold: AtomicBool::new(false),
            generation: watch::Sender::new(0),
        });
        let accept = tokio::spawn({
            let control = control.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    tokio::spawn(relay(client, server, control.clone()));
                }
            }
        });
        Ok(Self {
            addr,
            control,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, swallow everything the server sends.
    pub fn hold_responses(&self) {
        self.control.hold.store(true, Ordering::SeqCst);
    }

    /// Closes every open connection (the held bytes are lost) and forwards normally again.
    pub fn cut(&self) {
        // Cut first: a connection of the old generation must not forward a held byte in the
        // moment between the two steps.
        self.control.generation.send_modify(|g| *g += 1);
        self.control.hold.store(false, Ordering::SeqCst);
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.control.generation.send_modify(|g| *g += 1);
    }
}

async fn relay(client: TcpStream, server: TcpStream, control: Arc<Control>) {
    let mut cut = control.generation.subscribe();
    cut.mark_unchanged();
    let born = *cut.borrow();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return server_write.shutdown().await;
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return client_write.shutdown().await;
            }
            // Nothing once this connection has been cut (whatever `hold` says by then).
            let current = *control.generation.borrow() == born;
            if current && !control.hold.load(Ordering::SeqCst) {
                client_write.write_all(&buf[..n]).await?;
            }
        }
    };
    // Either direction ending, or a cut, drops both sockets.
    let _: std::io::Result<()> = tokio::select! {
        result = upstream => result,
        result = downstream => result,
        _ = cut.changed() => Ok(()),
    };
}
