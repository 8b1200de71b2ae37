//! A fault-injecting HTTP proxy on loopback, between the reporter and a real
//! Prefect server: it forwards every request, and for the ones a rule
//! names it loses the reply after the server has acted (a reset), answers a
//! status itself without forwarding, or never answers.
//!
//! One request per connection (`Connection: close` both ways), which is all
//! these tests need and keeps the parsing to `Content-Length` bodies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to a request a rule names.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Forward it, read the server's whole reply, then close the client's
    /// connection without a byte: the server acted, the client never knows.
    LoseReply,
    /// Answer this status (with `Retry-After: 0`) without forwarding.
    Status(u16),
    /// Never answer: the connection stays open and silent.
    Hang,
}

struct Rule {
    method: &'static str,
    path_ends_with: String,
    fault: Fault,
    times: usize,
}

/// The proxy: its URL stands in for the server's.
pub struct FaultProxy {
    /// The API URL to give the client: `http://127.0.0.1:<port>/api`.
    pub url: String,
    address: std::net::SocketAddr,
    upstream: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// Every fault injected, as `METHOD path fault`.
    injected: Arc<Mutex<Vec<String>>>,
    /// The task accepting connections: aborted, the port refuses them.
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// A proxy in front of the server whose API URL is `upstream`.
    pub fn start(upstream: &str) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http:// server")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let proxy = FaultProxy {
            url: format!("http://{address}/api"),
            address,
            upstream,
            rules: Arc::default(),
            injected: Arc::default(),
            accepting: Mutex::new(None),
            runtime: Some(runtime),
        };
        proxy.accept_on(listener);
        proxy
    }

    fn accept_on(&self, listener: TcpListener) {
        let (rules, injected, upstream) = (
            self.rules.clone(),
            self.injected.clone(),
            self.upstream.clone(),
        );
        let runtime = self.runtime.as_ref().unwrap();
        let task = runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (rules, injected, upstream) =
                    (rules.clone(), injected.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &rules, &injected).await;
                });
            }
        });
        *self.accepting.lock().unwrap() = Some(task);
    }

    /// An outage: for `duration` the port refuses connections, as a server
    /// that is down does; then it accepts them again.
    pub fn outage(&self, duration: Duration) {
        if let Some(task) = self.accepting.lock().unwrap().take() {
            task.abort();
        }
        let runtime = self.runtime.as_ref().unwrap();
        // The aborted task drops its listener at its next poll.
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        std::thread::sleep(duration);
        let listener = runtime
            .block_on(TcpListener::bind(self.address))
            .expect("the proxy's port is free again");
        self.accept_on(listener);
    }

    /// Applies `fault` to the next `times` requests of `method` whose path
    /// ends with `path_ends_with` (the query string left out).
    pub fn inject(&self, method: &'static str, path_ends_with: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            method,
            path_ends_with: path_ends_with.to_string(),
            fault,
            times,
        });
    }

    /// The faults injected so far.
    pub fn injected(&self) -> Vec<String> {
        self.injected.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// The fault for this request, if a rule has one left.
fn fault_for(rules: &Mutex<Vec<Rule>>, method: &str, path: &str) -> Option<Fault> {
    let path = path.split('?').next().unwrap_or(path);
    let mut rules = rules.lock().unwrap();
    let rule = rules
        .iter_mut()
        .find(|r| r.times > 0 && r.method == method && path.ends_with(&r.path_ends_with))?;
    rule.times -= 1;
    Some(rule.fault)
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    injected: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut client).await? else {
        return Ok(());
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let fault = fault_for(rules, &method, &path);
    if let Some(fault) = fault {
        injected
            .lock()
            .unwrap()
            .push(format!("{method} {path} {fault:?}"));
    }
    match fault {
        Some(Fault::Status(status)) => {
            let reply = format!(
                "HTTP/1.1 {status} Injected\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            client.write_all(reply.as_bytes()).await?;
            return Ok(());
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        _ => {}
    }
    // Forwarded with the connection closed after one exchange.
    let mut forwarded = String::from(&request_line);
    forwarded.push_str("\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name != "connection" && name != "keep-alive" {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(forwarded.as_bytes()).await?;
    server.write_all(&body).await?;
    let mut reply = Vec::new();
    server.read_to_end(&mut reply).await?;
    if matches!(fault, Some(Fault::LoseReply)) {
        // The server has acted; the client's connection closes without its answer.
        drop(client);
        return Ok(());
    }
    client.write_all(&reply).await?;
    client.shutdown().await
}

/// The request's head (without the blank line) and its body.
async fn read_request(client: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length = head
        .split("\r\n")
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, body)))
}
