//! Timed HTTP for the checks: every response keeps its status, headers,
//! body and how long it took. HTTP errors are answers, not failures; only
//! transport errors are. No retries: a test sees what a player would.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Resp {
    pub url: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub started: Instant,
    pub elapsed: Duration,
    pub done: Instant,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }
    /// `max-age` from Cache-Control, if any.
    pub fn max_age(&self) -> Option<u64> {
        let cc = self.header("cache-control")?;
        cc.split(',').find_map(|d| {
            d.trim()
                .strip_prefix("max-age=")
                .and_then(|v| v.trim().parse().ok())
        })
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} answered non-JSON ({e}): {:?}", self.url, self.text()))
    }
}

#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        Http::with_timeout(Duration::from_secs(15))
    }

    pub fn with_timeout(t: Duration) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(t))
            .build()
            .into();
        Http { agent }
    }

    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, String> {
        let started = Instant::now();
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = match body {
            Some(data) => self
                .agent
                .run(b.body(data.to_vec()).map_err(|e| e.to_string())?),
            None => self.agent.run(b.body(()).map_err(|e| e.to_string())?),
        }
        .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = res.into_body();
        let body = body
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| format!("{method} {url}: body: {e}"))?;
        let done = Instant::now();
        Ok(Resp {
            url: url.to_string(),
            status,
            headers,
            body,
            started,
            elapsed: done - started,
            done,
        })
    }

    pub fn try_get(&self, url: &str) -> Result<Resp, String> {
        self.request("GET", url, &[], None)
    }

    pub fn get(&self, url: &str) -> Resp {
        self.try_get(url).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn get_h(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", url, headers, None)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Raw HTTP/1.1 GET returning the status line and headers, for requests that
/// a client library would rewrite.
pub fn raw_get_status(port: u16, path: &str) -> u16 {
    use std::net::TcpStream;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
