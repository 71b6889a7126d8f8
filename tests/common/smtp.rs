//! Real SMTP peers for end-to-end tests: `ratchet edge` processes, Postfix's `smtp-sink`
//! as a next hop, and `swaks` as a client (Debian packages postfix and swaks).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::cluster::free_port;
pub use super::postfix::PostfixTls;
use super::postfix::{is_root, plain_smtpd, PostfixInstance};

/// Waits until something listens on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} is not listening on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Postfix's `smtp-sink`, dumping every transaction into a file of its own.
pub struct SmtpSink {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// [`SmtpSink::start`] on `ip` (a Docker network's gateway, say, for containers to
    /// reach), at a port free on loopback a moment ago.
    pub fn start_on(ip: IpAddr) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let addr = SocketAddr::new(ip, free_port().port());
        let mut command = Command::new("/usr/sbin/smtp-sink");
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .arg("-d")
            .arg(dir.path().join("%H%M%S."))
            .args([addr.to_string(), "64".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (Debian package postfix) is installed");
        wait_listening(addr, "smtp-sink");
        SmtpSink { addr, dir, child }
    }

    /// Every transaction so far: envelope lines, then the message as received.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
            .iter()
            .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
            .collect()
    }

    pub fn wait_for_messages(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if messages.len() >= count || Instant::now() > deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `ratchet edge` process.
pub struct EdgeProcess {
    pub addr: SocketAddr,
    /// Its HTTP listener (/healthz, /readyz, /metrics), when `--http` was given.
    pub http: Option<SocketAddr>,
    /// The command line after `ratchet`, to start it again as it was.
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl EdgeProcess {
    pub fn start(deciders: &str, next_hop: SocketAddr, config: Option<&std::path::Path>) -> EdgeProcess {
        Self::start_with(deciders, next_hop, config, &[], &[])
    }

    /// [`EdgeProcess::start_with`] for a next hop given as `host:port` (a name, for
    /// `next_hop_tls = "verify"`).
    pub fn start_to(deciders: &str, next_hop: &str, config: Option<&std::path::Path>, extra: &[&str], env: &[(&str, &str)]) -> EdgeProcess {
        let mut next_hop_args = vec!["--next-hop", next_hop];
        next_hop_args.extend_from_slice(extra);
        Self::spawn(deciders, config, &next_hop_args, env)
    }

    /// [`EdgeProcess::start`] with extra arguments (e.g. `--http ADDR`) and environment.
    /// Without `--accepted-domains` among them the edge relays for any domain
    /// (`--accepted-domains '*'`, which wins over the config file).
    pub fn start_with(
        deciders: &str,
        next_hop: SocketAddr,
        config: Option<&std::path::Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> EdgeProcess {
        let next_hop = next_hop.to_string();
        let mut next_hop_args = vec!["--next-hop", next_hop.as_str()];
        next_hop_args.extend_from_slice(extra);
        Self::spawn(deciders, config, &next_hop_args, env)
    }

    fn spawn(deciders: &str, config: Option<&std::path::Path>, extra: &[&str], env: &[(&str, &str)]) -> EdgeProcess {
        let addr = free_port();
        let mut args: Vec<String> = ["edge", "--listen", &addr.to_string(), "--deciders", deciders]
            .map(String::from)
            .into();
        if let Some(config) = config {
            args.extend(["--config".to_owned(), config.display().to_string()]);
        }
        if !extra.contains(&"--accepted-domains") {
            args.extend(["--accepted-domains", "*"].map(String::from));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let http = extra
            .iter()
            .position(|a| *a == "--http")
            .map(|i| extra[i + 1].parse().expect("--http is an address"));
        let mut edge = EdgeProcess {
            addr,
            http,
            args,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
        };
        edge.restart();
        edge
    }

    /// Starts the edge (again) with the command line it was first given.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the edge is already running");
        let child = Command::new(env!("CARGO_BIN_EXE_ratchet"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ratchet edge starts");
        self.child = Some(child);
        wait_listening(self.addr, "ratchet edge");
    }

    /// Stops the edge with SIGTERM, as Kubernetes does, and waits for it to drain and exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the edge is running");
        super::terminate(&mut child, "ratchet edge")
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The topmost `Received:` header an Exchange server stamps, naming its FQDN and build.
pub fn exchange_received(server_fqdn: &str, build: &str) -> String {
    format!(
        "Received: from {server_fqdn} (10.0.0.5) by {server_fqdn} (10.0.0.5) with Microsoft SMTP Server \
         (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id {build}; Mon, 20 May 2024 10:00:00 +0000"
    )
}

/// One SMTP session, plainly (no swaks: cheap enough for a workload), from an Exchange
/// `server_fqdn` at `build`, with `subject`: returns the reply to the end of DATA, or the
/// first reply that ended the session early, or why there was none.
pub fn deliver(to: SocketAddr, server_fqdn: &str, build: &str, subject: &str) -> String {
    deliver_from(None, to, server_fqdn, build, subject)
}

/// [`deliver`] from a socket bound to `from` (a loopback address of its own, 127.0.0.7
/// say, that a connector names).
pub fn deliver_from(from: Option<IpAddr>, to: SocketAddr, server_fqdn: &str, build: &str, subject: &str) -> String {
    match SmtpClient::connect(from, to) {
        Ok(mut client) => {
            let greeting = client.reply();
            if !greeting.starts_with("220") {
                return greeting;
            }
            let answer = client.transaction(server_fqdn, build, subject);
            client.send(b"QUIT\r\n");
            answer
        }
        Err(e) => format!("(no connection: {e})"),
    }
}

/// A plain SMTP client that sends what it is told and reads replies whole.
pub struct SmtpClient {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl SmtpClient {
    /// Connects to `to`, from `from` when given (its port chosen by the system).
    pub fn connect(from: Option<IpAddr>, to: SocketAddr) -> std::io::Result<SmtpClient> {
        let socket = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)?;
        if let Some(from) = from {
            socket.bind(&SocketAddr::new(from, 0).into())?;
        }
        socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
        let stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        Ok(SmtpClient {
            reader: std::io::BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Writes `bytes` as they are; whether the connection took them.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        std::io::Write::write_all(&mut self.writer, bytes).is_ok()
    }

    /// Closes the sending direction: the server reads the end of the input.
    pub fn finish_sending(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }

    /// The next reply, all its lines, without the last line's CRLF; what came before the
    /// connection closed, and `(connection closed)`, if it did.
    pub fn reply(&mut self) -> String {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut self.reader, &mut line).unwrap_or(0) == 0 {
                return format!("{text}(connection closed)");
            }
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return text.trim_end().to_owned();
            }
        }
    }

    /// Sends one command line and returns its reply.
    pub fn command(&mut self, line: &str) -> String {
        if !self.send(format!("{line}\r\n").as_bytes()) {
            return "(connection closed)".into();
        }
        self.reply()
    }

    /// EHLO, one message from an Exchange `server_fqdn` at `build` with `subject`: the
    /// reply to the end of DATA, or the first reply that ended the transaction early.
    pub fn transaction(&mut self, server_fqdn: &str, build: &str, subject: &str) -> String {
        let commands = [
            format!("EHLO {server_fqdn}"),
            "MAIL FROM:<admin@bear.example>".to_owned(),
            "RCPT TO:<user@owl.example>".to_owned(),
            "DATA".to_owned(),
        ];
        for command in commands {
            let answer = self.command(&command);
            if !(answer.starts_with("250") || answer.starts_with("354")) {
                return answer;
            }
        }
        let message = format!(
            "{}\r\nFrom: admin@bear.example\r\nTo: user@owl.example\r\nSubject: {subject}\r\n\r\nbody\r\n.\r\n",
            exchange_received(server_fqdn, build)
        );
        if !self.send(message.as_bytes()) {
            return "(connection closed)".into();
        }
        self.reply()
    }
}

/// Runs swaks against `server` with a message stamped by `server_fqdn` at `build`.
pub fn swaks(server: SocketAddr, server_fqdn: &str, build: &str, extra: &[&str]) -> Output {
    Command::new("swaks")
        .args(["--server", &server.ip().to_string(), "--port", &server.port().to_string()])
        .args([
            "--from",
            "admin@bear.example",
            "--to",
            "user@owl.example",
            "--helo",
            server_fqdn,
            "--timeout",
            "15",
        ])
        .args(["--add-header", &exchange_received(server_fqdn, build)])
        .args(extra)
        .output()
        .expect("swaks (Debian package) is installed")
}

/// The last reply swaks printed to the end of DATA (or to whatever failed first), in clear
/// (`<-`) or after STARTTLS (`<~`).
pub fn final_reply(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout);
    let replies: Vec<&str> = text
        .lines()
        .filter(|l| ["<-  ", "<** ", "<~  ", "<~* "].iter().any(|p| l.starts_with(p)))
        .map(|l| &l[4..])
        .collect();
    let before_quit = replies.iter().rev().find(|r| !r.starts_with("221 ")).copied();
    before_quit.unwrap_or_default().to_owned()
}

/// A private Postfix instance (see `postfix`) on a free loopback port, relaying to a relayhost.
pub struct Postfix(PostfixInstance);

impl std::ops::Deref for Postfix {
    type Target = PostfixInstance;

    fn deref(&self) -> &PostfixInstance {
        &self.0
    }
}

impl Postfix {
    pub fn start(relayhost: SocketAddr) -> Postfix {
        Self::start_configured(relayhost, None, "", &plain_smtpd)
    }

    /// [`Postfix::start`], offering STARTTLS with `tls` (`smtpd_tls_security_level = may`)
    /// and logging every TLS session it accepts (`smtpd_tls_loglevel = 1`: "Anonymous TLS
    /// connection established from ..."). It relays on to `relayhost` in clear.
    pub fn start_with_tls(relayhost: SocketAddr, tls: Option<&PostfixTls>) -> Postfix {
        Self::start_configured(relayhost, tls, "", &plain_smtpd)
    }

    /// [`Postfix::start`] with `main_cf` (lines of `main.cf`, such as a milter's) added
    /// to its configuration.
    pub fn start_with_main_cf(relayhost: SocketAddr, main_cf: &str) -> Postfix {
        Self::start_configured(relayhost, None, main_cf, &plain_smtpd)
    }

    /// [`Postfix::start`] with `smtpd` as master.cf's smtpd services: what it makes of the
    /// address Postfix is to listen on, e.g. with a proxy filter.
    pub fn start_with_smtpd(relayhost: SocketAddr, smtpd: &dyn Fn(SocketAddr) -> String) -> Postfix {
        Self::start_configured(relayhost, None, "", smtpd)
    }

    fn start_configured(
        relayhost: SocketAddr,
        tls: Option<&PostfixTls>,
        extra_main_cf: &str,
        smtpd: &dyn Fn(SocketAddr) -> String,
    ) -> Postfix {
        // A port free a moment ago may be taken by a parallel test before Postfix binds it:
        // then start again on another one.
        let mut log = String::new();
        for attempt in 1..=3 {
            let addr = free_port();
            match PostfixInstance::start(addr, relayhost, tls, extra_main_cf, smtpd) {
                Ok(instance) => {
                    wait_listening(addr, "Postfix");
                    return Postfix(instance);
                }
                Err(why) => {
                    eprintln!("Postfix did not start on {addr} (attempt {attempt})");
                    log = why;
                }
            }
        }
        panic!("Postfix did not start (it needs root or passwordless sudo):\n{log}");
    }

    /// Waits for a delivery status line (`status=sent|deferred|bounced`) that mentions `needle`.
    pub fn wait_for_status(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(" status=") && l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no delivery status mentioning {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Messages waiting in the deferred queue.
    pub fn deferred_count(&self) -> usize {
        self.queued("deferred")
    }
}
