//! What a test needs to look at a decider's pages as a browser would: a plain HTTP/1.1
//! client on a std TcpStream (no client crate), headless Chromium for screenshots and the
//! rendered DOM, and the directory where tests leave artifacts for people to look at.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One HTTP response, its header names in lower case.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn http(addr: SocketAddr, method: &str, path: &str, extra_headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).expect("headers are UTF-8");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("the body is UTF-8"),
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(addr, "GET", path, &[], "")
}

/// POSTs an `application/x-www-form-urlencoded` body, with extra headers.
pub fn post_form(addr: SocketAddr, path: &str, form: &str, extra_headers: &[(&str, &str)]) -> HttpResponse {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    headers.extend_from_slice(extra_headers);
    http(addr, "POST", path, &headers, form)
}

/// The text of an HTML fragment: tags dropped, the common entities decoded, spaces collapsed.
pub fn text_of(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of each table row (`<tr>…</tr>`) of an HTML document.
pub fn table_rows(html: &str) -> Vec<String> {
    html.split("<tr")
        .skip(1)
        .map(|row| text_of(&format!("<tr{}", row.split("</tr>").next().unwrap_or(""))))
        .collect()
}

/// Where tests leave files for people: `$CARGO_TARGET_DIR/test-artifacts` (or the
/// workspace's `target/test-artifacts`), created if need be.
pub fn artifact_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Headless Chromium (the Debian package `chromium`, installed by deploy/install-deps.sh),
/// each run with a fresh profile and nothing that calls home.
pub struct Chromium {
    binary: PathBuf,
}

const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

impl Chromium {
    pub fn find() -> Chromium {
        let binary = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|name| {
                std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
            })
            .expect("headless Chromium is not installed: run deploy/install-deps.sh (Debian package `chromium`)");
        Chromium { binary }
    }

    /// Runs Chromium on `url` with `args`, and returns its stdout.
    fn run(&self, args: &[String], url: &str) -> Vec<u8> {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&self.binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // Read stdout on a thread so that a large DOM cannot fill the pipe and stall Chromium.
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let mut stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stderr.read_to_string(&mut out);
            out
        });
        let deadline = Instant::now() + CHROMIUM_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium {args:?} {url} did not finish in {CHROMIUM_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = reader.join().unwrap();
        let errors = errors.join().unwrap();
        assert!(status.success(), "chromium {args:?} {url} failed ({status}):\n{errors}");
        out
    }

    /// Writes a PNG of the page, as a 1400x1000 window shows it.
    pub fn screenshot(&self, url: &str, png: &Path) {
        let _ = std::fs::remove_file(png);
        self.run(&[format!("--screenshot={}", png.display())], url);
    }

    /// The DOM after the page has loaded, serialized.
    pub fn dump_dom(&self, url: &str) -> String {
        String::from_utf8(self.run(&["--dump-dom".to_owned()], url)).expect("the DOM is UTF-8")
    }
}
