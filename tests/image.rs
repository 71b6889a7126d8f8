//! The image, built and run for real. `deploy/build-image.sh` builds it, with no registry,
//! from the `ratchet` binary Cargo built for this test; then Docker runs the Helm chart's
//! pods from it as `helm/check.py pods` renders them: three deciders (each with its
//! check-identity init container, its join sidecar and a named volume for its claim) and
//! an edge, with the rendered image, command, arguments, environment, ConfigMap files and
//! certificate Secrets (mutual TLS, the chart's default), as the rendered security context
//! says: uid/gid 10001, a read-only root filesystem, no capabilities, no privilege
//! escalation, and a tmpfs where the chart has an emptyDir.
//!
//! Docker plays Kubernetes: each pod is a sandbox container that holds the pod's network
//! namespace, on a network of the test's own, with the pod's stable DNS name (and for
//! deciders the headless Service's name, which then resolves to all of them) as network
//! aliases; the pod's containers join that namespace, as in a pod. The test stands outside,
//! as operators and mail servers do: `ratchet ctl` with an admin certificate against the
//! deciders' published gRPC ports, `swaks` against the edge's published SMTP port, and
//! Postfix's `smtp-sink` on the network's gateway as the edge's next hop.
//!
//! These machines have a Docker Engine: without one this test fails, it does not skip.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::chart::{self, Ca};
use common::smtp::{final_reply, swaks, SmtpSink};
use serde_json::Value;
use tempfile::TempDir;

const TENANT: &str = "bear";
const OUT_OF_DATE: &str = "15.0.1497.48";
const COMPLIANT: &str = "15.2.2562.17";
/// In the CI values' edge.config.accepted_domains.
const RECIPIENT: &str = "user@mail.example.net";
/// Every Docker object of a run carries this label, with the run's name as its value.
const LABEL: &str = "ratchet-image-test";

/// `docker ARGS`, which must succeed; its stdout, trimmed.
fn docker<S: AsRef<str>>(args: &[S]) -> String {
    let output = docker_lenient(args);
    assert!(
        output.status.success(),
        "docker {} failed: {}",
        args.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `docker ARGS`, whether it succeeds or not.
fn docker_lenient<S: AsRef<str>>(args: &[S]) -> Output {
    Command::new("docker")
        .args(args.iter().map(AsRef::as_ref))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the docker CLI ({e}): this test needs a Docker Engine"))
}

/// One run: its name (the release, the network, the value of [`LABEL`]), the image it
/// built, and the files its pods mount. Dropping it removes every container, volume and
/// network it made, and its image, even when the test panics.
struct Run {
    name: String,
    image: String,
    dir: TempDir,
    ca: Ca,
    ctl_env: Vec<(String, String)>,
}

impl Run {
    fn new() -> Run {
        let version = docker_lenient(&["version", "--format", "{{.Server.Version}}"]);
        assert!(
            version.status.success(),
            "no Docker Engine reachable (`docker version`: {}): this test runs the image in Docker",
            String::from_utf8_lossy(&version.stderr).trim()
        );
        let name = format!("rimg{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let mut ca = Ca::new(dir.path().join("ca"));
        let ctl_env = ca.admin_env("image-test-operator");
        Run {
            image: format!("ratchet-image-test:{name}"),
            name,
            dir,
            ca,
            ctl_env,
        }
    }

    /// deploy/build-image.sh with the binary under test.
    fn build_image(&self) {
        let started = Instant::now();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/build-image.sh");
        let output = Command::new(script)
            .args(["--binary", env!("CARGO_BIN_EXE_ratchet"), "--tag", &self.image])
            .output()
            .expect("deploy/build-image.sh runs");
        assert!(
            output.status.success(),
            "deploy/build-image.sh failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("image {} built in {:.1?}", self.image, started.elapsed());
    }

    /// A network of the run's own; returns its gateway, the host's address on it.
    fn create_network(&self) -> IpAddr {
        docker(&["network", "create", "--label", &self.label(), &self.name]);
        let gateway = docker(&["network", "inspect", "--format", "{{(index .IPAM.Config 0).Gateway}}", &self.name]);
        gateway
            .parse()
            .unwrap_or_else(|e| panic!("gateway {gateway:?} of {}: {e}", self.name))
    }

    fn label(&self) -> String {
        format!("{LABEL}={}", self.name)
    }

    /// Runs a rendered pod: its sandbox (on the network, with `aliases`, publishing
    /// `publish` on loopback), each init container to a successful end, then its containers.
    fn start_pod(&mut self, pod: &Value, aliases: &[String], publish: &[u64]) -> Pod {
        let name = pod["name"].as_str().unwrap().to_owned();
        let volumes = chart::lay_out_volumes(&self.dir.path().join(&name), &pod["volumes"], &mut self.ca, &self.name);
        for (volume, source) in pod["volumes"].as_object().unwrap() {
            if let Some(claim) = source["persistentVolumeClaim"]["claimName"].as_str() {
                docker(&["volume", "create", "--label", &self.label(), claim]);
            } else if source.get("secret").is_some() {
                // Kubernetes gives a Secret's files to the pod's fsGroup (10001); here the
                // container's user reads them as anyone may.
                make_readable(&volumes[volume]);
            }
        }
        let user = format!(
            "{}:{}",
            pod["securityContext"]["runAsUser"].as_u64().expect("the chart sets runAsUser"),
            pod["securityContext"]["runAsGroup"].as_u64().expect("the chart sets runAsGroup")
        );
        assert!(
            pod["securityContext"]["runAsNonRoot"] == true && !user.starts_with("0:"),
            "{name}: {}",
            pod["securityContext"]
        );
        let image = pod["containers"][0]["image"].as_str().unwrap();
        let mut sandbox = vec!["run", "-d", "--name", &name, "--hostname", &name, "--network", &self.name];
        let label = self.label();
        sandbox.extend(["--label", &label, "--read-only", "--user", &user, "--cap-drop", "ALL"]);
        for alias in aliases {
            sandbox.extend(["--network-alias", alias]);
        }
        let ports: Vec<String> = publish.iter().map(|p| format!("127.0.0.1::{p}")).collect();
        for port in &ports {
            sandbox.extend(["-p", port]);
        }
        sandbox.extend(["--entrypoint", "/usr/bin/tini", image, "--", "sleep", "infinity"]);
        docker(&sandbox);
        let published = publish
            .iter()
            .map(|port| {
                let address = docker(&["port", &name, &format!("{port}/tcp")]);
                (*port, address.parse().unwrap_or_else(|e| panic!("{name} {port}: {address:?}: {e}")))
            })
            .collect();

        for container in pod["initContainers"].as_array().unwrap() {
            let output = docker_lenient(&self.container_args(&name, &user, container, &pod["volumes"], &volumes, false));
            assert!(
                output.status.success(),
                "{name}/{} failed ({}):\n{}",
                container["name"].as_str().unwrap(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut containers = BTreeMap::new();
        for container in pod["containers"].as_array().unwrap() {
            let args = self.container_args(&name, &user, container, &pod["volumes"], &volumes, true);
            docker(&args);
            let container = container["name"].as_str().unwrap();
            containers.insert(container.to_owned(), format!("{name}-{container}"));
        }
        Pod {
            name,
            published,
            containers,
        }
    }

    /// `docker run` for one rendered container in the pod `pod`'s namespace: detached, or
    /// in the foreground and removed after (an init container).
    fn container_args(
        &self,
        pod: &str,
        user: &str,
        container: &Value,
        volumes: &Value,
        directories: &BTreeMap<String, std::path::PathBuf>,
        detached: bool,
    ) -> Vec<String> {
        let name = format!("{pod}-{}", container["name"].as_str().unwrap());
        let mut args: Vec<String> = [
            "run",
            if detached { "-d" } else { "--rm" },
            "--name",
            &name,
            "--label",
            &self.label(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--network".into(), format!("container:{pod}"), "--user".into(), user.into()]);
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}: {security}");
        args.push("--read-only".into());
        if security["allowPrivilegeEscalation"] == false {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        for capability in security["capabilities"]["drop"].as_array().into_iter().flatten() {
            args.extend(["--cap-drop".into(), capability.as_str().unwrap().into()]);
        }
        for (key, value) in container["env"].as_object().unwrap() {
            args.extend(["--env".into(), format!("{key}={}", value.as_str().unwrap())]);
        }
        for mount in container["volumeMounts"].as_array().unwrap() {
            let volume = mount["name"].as_str().unwrap();
            let target = mount["mountPath"].as_str().unwrap();
            let read_only = if mount["readOnly"] == true { ",readonly" } else { "" };
            let source = &volumes[volume];
            if let Some(claim) = source["persistentVolumeClaim"]["claimName"].as_str() {
                args.extend(["--mount".into(), format!("type=volume,source={claim},target={target}{read_only}")]);
            } else if source.get("emptyDir").is_some() {
                args.extend(["--tmpfs".into(), target.into()]);
            } else {
                // ConfigMaps and Secrets: Kubernetes mounts them read-only whatever the mount says.
                let directory = directories[volume].display();
                args.extend(["--mount".into(), format!("type=bind,source={directory},target={target},readonly")]);
            }
        }
        let command: Vec<String> = strings(&container["command"]);
        if let Some((program, rest)) = command.split_first() {
            args.extend(["--entrypoint".into(), program.clone(), container["image"].as_str().unwrap().into()]);
            args.extend(rest.iter().cloned());
        } else {
            args.push(container["image"].as_str().unwrap().into());
        }
        args.extend(strings(&container["args"]));
        args
    }

    /// `ratchet ctl --endpoints ENDPOINTS ARGS...` as the test's operator.
    fn ctl(&self, endpoints: &str, args: &[&str]) -> Output {
        common::ratchet()
            .args(["ctl", "--endpoints", endpoints])
            .args(args)
            .envs(self.ctl_env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("the ratchet binary runs")
    }

    /// [`Run::ctl`], which must succeed; its stdout.
    fn ctl_ok(&self, endpoints: &str, args: &[&str]) -> String {
        let output = self.ctl(endpoints, args);
        assert!(
            output.status.success(),
            "ratchet ctl {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim(),
            self.logs()
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The last lines each of the run's containers logged.
    fn logs(&self) -> String {
        let names = docker(&["ps", "-a", "--filter", &format!("label={}", self.label()), "--format", "{{.Names}}"]);
        names
            .lines()
            .map(|name| {
                let output = docker_lenient(&["logs", "--tail", "40", name]);
                format!(
                    "--- {name}\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label());
        for (list, remove) in [(["ps", "-aq"], ["rm", "-fv"]), (["volume", "ls"], ["volume", "rm"])] {
            let listed = docker_lenient(&[list[0], list[1], "--quiet", "--filter", &filter]);
            for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                docker_lenient(&[remove[0], remove[1], id]);
            }
        }
        docker_lenient(&["network", "rm", &self.name]);
        docker_lenient(&["image", "rm", &self.image]);
    }
}

/// A running pod: its sandbox's name, its published ports (container port -> loopback
/// address) and its containers' Docker names by container name.
struct Pod {
    name: String,
    published: BTreeMap<u64, SocketAddr>,
    containers: BTreeMap<String, String>,
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

fn make_readable(directory: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(directory).unwrap() {
        std::fs::set_permissions(entry.unwrap().path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// The container port of `container`'s port named `name`.
fn port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name} in {container}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// `docker inspect`'s state of a container: (status, exit code).
fn state(container: &str) -> (String, i64) {
    let state = docker(&["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container]);
    let (status, code) = state.split_once(' ').unwrap();
    (status.to_owned(), code.parse().unwrap())
}

/// `docker top`: each process of a container as (uid, gid, command line), PID 1 first.
fn processes(container: &str) -> Vec<(u32, u32, String)> {
    let table = docker(&["top", container, "-o", "pid,uid,gid,args"]);
    table
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[1].parse().unwrap(), fields[2].parse().unwrap(), fields[3..].join(" "))
        })
        .collect()
}

/// The status line of `GET path` over plain HTTP, if anything answered.
fn http_status(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: edge\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.lines().next().map(str::to_owned)
}

struct Deciders {
    pods: Vec<Pod>,
    grpc: u64,
    /// Pods whose decider container has been stopped.
    stopped: Vec<usize>,
}

impl Deciders {
    /// The running deciders' published gRPC addresses, as `ctl --endpoints` takes them.
    fn endpoints(&self) -> String {
        self.running()
            .map(|p| p.published[&self.grpc].to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn running(&self) -> impl Iterator<Item = &Pod> {
        self.pods
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.stopped.contains(i))
            .map(|(_, p)| p)
    }

    /// Waits until every running decider reports the same leader, one of them, and
    /// `voters` voters; returns each one's `cluster status` by pod name.
    fn wait_for_group(&self, run: &Run, voters: usize) -> BTreeMap<String, Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let statuses: BTreeMap<String, Option<Value>> = self
                .running()
                .map(|pod| {
                    let output = run.ctl(&pod.published[&self.grpc].to_string(), &["--json", "cluster", "status"]);
                    let status = output.status.success().then(|| serde_json::from_slice(&output.stdout).unwrap());
                    (pod.name.clone(), status)
                })
                .collect();
            let running_ids: Vec<u64> = statuses.values().flatten().map(|s| s["node_id"].as_u64().unwrap()).collect();
            if chart::agreed_leader(&statuses, voters).is_some_and(|leader| running_ids.contains(&leader)) {
                return statuses.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
            }
            if Instant::now() > deadline {
                panic!("no group of {voters} voters with one leader: {statuses:#?}\n{}", run.logs());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The reply to a message from `server` at `build` through the edge.
fn send(edge: SocketAddr, server: &str, build: &str) -> String {
    final_reply(&swaks(edge, server, build, &["--to", RECIPIENT]))
}

/// The servers of the tenant's report, by name.
fn report(run: &Run, endpoints: &str) -> BTreeMap<String, Value> {
    let report: Value = serde_json::from_str(&run.ctl_ok(endpoints, &["--json", "report", "--tenant", TENANT])).unwrap();
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["server_fqdn"].as_str().unwrap().to_owned(), s.clone()))
        .collect()
}

/// The tenant's report once it lists `server`: a first sighting is committed in the
/// background, after the reply that answered it.
fn report_listing(run: &Run, endpoints: &str, server: &str) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let servers = report(run, endpoints);
        if servers.contains_key(server) {
            return servers;
        }
        assert!(
            Instant::now() < deadline,
            "{server} was never committed: {servers:#?}\n{}",
            run.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_charts_pods_run_from_the_image_decide_mail_and_outlive_a_sigtermed_leader() {
    let mut run = Run::new();
    run.build_image();
    let gateway = run.create_network();
    // The edge's next hop, on the host; mail from the host reaches the edge from the
    // gateway too (Docker's proxy for published ports connects from there).
    let sink = SmtpSink::start_on(gateway);
    let (repository, tag) = run.image.split_once(':').unwrap();
    let rendered = chart::render(
        &run.name,
        &[
            &format!("edge.nextHop={}", sink.addr),
            &format!("image.repository={repository}"),
            &format!("image.tag={tag}"),
        ],
    );

    // Three deciders, each known by its pod's DNS name and by the headless Service's.
    let service = format!("{}.ratchet.svc.cluster.local", rendered["serviceName"].as_str().unwrap());
    let decider_pods = rendered["pods"].as_array().unwrap();
    assert_eq!(decider_pods.len(), 3);
    let grpc = port(&decider_pods[0]["containers"][0], "grpc");
    let mut pods = Vec::new();
    for pod in decider_pods {
        let aliases = [pod["dns"].as_str().unwrap().to_owned(), service.clone()];
        pods.push(run.start_pod(pod, &aliases, &[grpc]));
    }
    let mut deciders = Deciders {
        pods,
        grpc,
        stopped: Vec::new(),
    };
    let statuses = deciders.wait_for_group(&run, 3);
    let ids = chart::member_ids(statuses.values().next().unwrap());
    let names: Vec<&str> = deciders.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        ids.keys().map(String::as_str).collect::<Vec<_>>(),
        names,
        "members are named after their pods"
    );

    // The root filesystem is read-only.
    let probe = docker_lenient(&["exec", &deciders.pods[0].containers["decider"], "touch", "/usr/local/bin/probe"]);
    assert!(
        !probe.status.success() && String::from_utf8_lossy(&probe.stderr).contains("Read-only file system"),
        "the root filesystem is writable: {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // The tenant's mail comes from the host, through the gateway.
    let endpoints = deciders.endpoints();
    run.ctl_ok(&endpoints, &["tenant", "add", TENANT]);
    run.ctl_ok(
        &endpoints,
        &["connector", "add", "--tenant", TENANT, "--cidr", &format!("{gateway}/32")],
    );
    let first_seen = (Utc::now() - TimeDelta::days(100)).to_rfc3339();
    let old = "old.bear.example";
    run.ctl_ok(
        &endpoints,
        &[
            "server",
            "import",
            "--tenant",
            TENANT,
            "--server",
            old,
            "--build",
            OUT_OF_DATE,
            "--first-seen",
            &first_seen,
        ],
    );

    // The edge, ready once it has the connectors and a decider has answered.
    let edge_pod = &rendered["edge"];
    let edge_container = &edge_pod["containers"][0];
    let (smtp, http) = (port(edge_container, "smtp"), port(edge_container, "http"));
    let edge = run.start_pod(edge_pod, &[], &[smtp, http]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(edge.published[&http], "/readyz").is_none_or(|s| !s.contains(" 200 ")) {
        assert!(Instant::now() < deadline, "the edge never became ready\n{}", run.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
    let edge_smtp = edge.published[&smtp];

    // A compliant server's mail is relayed; one past 90 days is blocked; a server never
    // seen before is accepted and its first sighting committed.
    let reply = send(edge_smtp, "exch1.bear.example", COMPLIANT);
    assert!(reply.starts_with("250 "), "compliant: {reply}\n{}", run.logs());
    let messages = sink.wait_for_messages(1);
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains("exch1.bear.example"), "{}", messages[0]);
    let reply = send(edge_smtp, old, OUT_OF_DATE);
    assert!(reply.starts_with("550 5.7.230 "), "past its deadline: {reply}\n{}", run.logs());
    let reply = send(edge_smtp, "new1.bear.example", OUT_OF_DATE);
    assert!(reply.starts_with("250 "), "first sighting: {reply}\n{}", run.logs());
    let servers = report_listing(&run, &endpoints, "new1.bear.example");
    assert_eq!(servers["new1.bear.example"]["status"], "out_of_date", "{servers:#?}");

    // Every container is still up, every process in it runs as 10001:10001, and each
    // decider is ratchet itself under tini (start-decider.sh execs it). Each join sidecar
    // has found its pod a member and said so on the pod's volume, shared with the decider.
    for pod in deciders.pods.iter().chain([&edge]) {
        for container in pod.containers.values() {
            assert_eq!(state(container).0, "running", "{container}\n{}", run.logs());
            for (uid, gid, command) in processes(container) {
                assert_eq!((uid, gid), (10001, 10001), "{container}: {command}");
            }
        }
    }
    for pod in &deciders.pods {
        let processes = processes(&pod.containers["decider"]);
        let programs: Vec<&str> = processes.iter().map(|(_, _, command)| command.split(' ').next().unwrap()).collect();
        assert_eq!(programs, ["/usr/bin/tini", "ratchet"], "{}: {processes:?}", pod.name);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for pod in &deciders.pods {
        let marker = || docker_lenient(&["exec", &pod.containers["decider"], "cat", "/var/lib/ratchet/joined"]);
        while String::from_utf8_lossy(&marker().stdout).trim() != ids[&pod.name].to_string() {
            assert!(Instant::now() < deadline, "no join marker on {}'s volume\n{}", pod.name, run.logs());
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    // SIGTERM to the leader's decider container: tini passes it on, the decider stops
    // cleanly within the chart's grace period, and the other two elect a leader.
    let leader_id = statuses.values().next().unwrap()["leader_id"].as_u64().unwrap();
    let leader = deciders.pods.iter().position(|p| ids[&p.name] == leader_id).unwrap();
    let container = deciders.pods[leader].containers["decider"].clone();
    let grace = Duration::from_secs(decider_pods[0]["terminationGracePeriodSeconds"].as_u64().unwrap());
    docker(&["kill", "--signal", "TERM", &container]);
    let deadline = Instant::now() + grace;
    let (status, code) = loop {
        let (status, code) = state(&container);
        if status == "exited" {
            break (status, code);
        }
        assert!(Instant::now() < deadline, "{container} still {status} {grace:?} after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((status.as_str(), code), ("exited", 0), "{container} after SIGTERM\n{}", run.logs());
    let log = docker_lenient(&["logs", &container]);
    assert!(
        String::from_utf8_lossy(&log.stderr).contains("stop signal received"),
        "the decider saw SIGTERM itself: {}",
        String::from_utf8_lossy(&log.stderr)
    );
    deciders.stopped.push(leader);
    let after = deciders.wait_for_group(&run, 3);
    let new_leader = after.values().next().unwrap()["leader_id"].as_u64().unwrap();
    assert_ne!(new_leader, leader_id);

    // The two go on deciding: through the same edge, a new server is accepted and its first
    // sighting committed, the blocked one is still blocked, the compliant one relayed.
    let endpoints = deciders.endpoints();
    let reply = send(edge_smtp, "new2.bear.example", OUT_OF_DATE);
    assert!(
        reply.starts_with("250 "),
        "first sighting after the leader left: {reply}\n{}",
        run.logs()
    );
    let reply = send(edge_smtp, old, OUT_OF_DATE);
    assert!(reply.starts_with("550 5.7.230 "), "still blocked: {reply}\n{}", run.logs());
    let reply = send(edge_smtp, "exch1.bear.example", COMPLIANT);
    assert!(reply.starts_with("250 "), "compliant: {reply}\n{}", run.logs());
    let servers = report_listing(&run, &endpoints, "new2.bear.example");
    assert_eq!(servers["new2.bear.example"]["status"], "out_of_date", "{servers:#?}");
    assert_eq!(sink.wait_for_messages(4).len(), 4, "every 250 was relayed, nothing else");

    // Restarted on its volume, the old leader comes back as the same node.
    docker(&["start", &container]);
    deciders.stopped.clear();
    let restarted = deciders.wait_for_group(&run, 3);
    for (pod, status) in &restarted {
        assert_eq!(chart::member_ids(status), ids, "{pod}: membership unchanged after the restart");
    }
    assert_eq!(restarted[&deciders.pods[leader].name]["node_id"].as_u64(), Some(leader_id));
}
