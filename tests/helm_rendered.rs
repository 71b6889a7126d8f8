//! The Helm chart's decider StatefulSet, run for real: real `ratchet decider` processes
//! (and their `join` sidecars) started with exactly the command, arguments and environment
//! that the rendered StatefulSet gives each pod, on loopback.
//!
//! `helm/check.py pods` renders the chart with Helm's own Go SDK and resolves each pod as
//! Kubernetes would (POD_NAME from the downward API, `$(VAR)` expansion, ConfigMap volume
//! contents). This test then changes only where things are: each pod's stable DNS name and
//! its listen addresses become a loopback port of its own, and each volume's mount path a
//! directory of its own (the PersistentVolumeClaim's directory survives a pod restart, as
//! the claim does). `tini --`, which only forwards signals as PID 1 in the image, is left
//! out. Everything else, the start and join scripts included, runs as rendered.
//!
//! With `tls.enabled` (the chart's default) each pod mounts its component's certificate
//! Secret; the test makes those Secrets' files with the real `ratchet certs` (one CA, one
//! certificate per component with the role the chart's README gives it), and its own
//! `ratchet ctl` calls present an admin certificate from the same CA.
//!
//! With `backup.enabled` the backup CronJob's pod is laid out the same way (its claim a
//! directory, the deciders' client Service one of the pods): the test runs it against the
//! deciders as the CronJob would, and restores its snapshot into a new release's
//! StatefulSet as the chart's README says.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use common::chart::{self, Ca};
use common::cluster::free_port;
use serde_json::Value;
use tempfile::TempDir;

const GRPC_PORT: u16 = 7001;
/// The release most renderings use; with no fullnameOverride it is also the chart's fullname.
const RELEASE: &str = "ratchet";

/// One container of a pod, with addresses and paths already moved to this machine.
struct Container {
    name: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

struct Pod {
    name: String,
    /// The loopback address standing in for `<dns name>:7001` and the pod's `--listen`.
    grpc: String,
    /// The directory standing in for the pod's PersistentVolumeClaim.
    volume: PathBuf,
    /// The arguments of the decider container as rendered, before any rewriting.
    rendered_args: Vec<String>,
    rendered_dns: String,
    init_containers: Vec<Container>,
    containers: Vec<Container>,
    /// RATCHET_CERT, RATCHET_KEY and RATCHET_CA of an admin certificate for the test's own
    /// `ratchet ctl` calls when the chart renders TLS; empty without TLS (plaintext on
    /// loopback needs nothing).
    ctl_env: Vec<(String, String)>,
}

impl Container {
    fn spawn(&mut self, pod: &str) {
        assert!(self.child.is_none(), "{pod}/{} is already running", self.name);
        let log = OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group, so that killing the pod also ends any `ratchet ctl`
            // that a script is running.
            .process_group(0);
        self.child = Some(command.spawn().unwrap_or_else(|e| panic!("starting {pod}/{}: {e}", self.name)));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            child.wait().unwrap();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the running container to exit, and returns how it did.
    fn wait_for_exit(&mut self, pod: &str, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{pod}/{} did not finish\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Pod {
    /// Starts the pod as the kubelet does: each init container in turn, to a successful
    /// end, then all the containers at once.
    fn start(&mut self) {
        for index in 0..self.init_containers.len() {
            self.init_containers[index].spawn(&self.name);
            self.wait_for_init(index, Duration::from_secs(60));
        }
        self.start_containers();
    }

    fn start_containers(&mut self) {
        for container in &mut self.containers {
            container.spawn(&self.name);
        }
    }

    /// Waits for a running init container to exit, which it must do successfully.
    fn wait_for_init(&mut self, index: usize, timeout: Duration) {
        let container = &mut self.init_containers[index];
        let status = container.wait_for_exit(&self.name, timeout);
        assert!(
            status.success(),
            "{}/{} failed ({status})\n{}",
            self.name,
            container.name,
            container.log()
        );
    }

    /// Kills every container at once, as a node failure or `kubectl delete pod --force` would.
    fn kill(&mut self) {
        for container in self.init_containers.iter_mut().chain(&mut self.containers) {
            container.kill();
        }
    }

    /// A container that has exited although nothing stopped it, if any.
    fn exited_container(&mut self) -> Option<String> {
        for container in &mut self.containers {
            if let Some(status) = container.child.as_mut().and_then(|child| child.try_wait().unwrap()) {
                return Some(format!("{}/{} exited ({status})", self.name, container.name));
            }
        }
        None
    }

    /// Whether the pod's containers (not just its init containers) are running.
    fn is_running(&self) -> bool {
        self.containers.iter().any(|c| c.child.is_some())
    }

    fn logs(&self) -> String {
        self.init_containers
            .iter()
            .chain(&self.containers)
            .map(|c| format!("--- {}/{}\n{}", self.name, c.name, c.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn log_of(&self, container: &str) -> String {
        self.init_containers
            .iter()
            .chain(&self.containers)
            .find(|c| c.name == container)
            .unwrap()
            .log()
    }

    /// `ratchet ctl --endpoints <this pod> ARGS...` as the test's operator.
    fn ctl(&self, args: &[&str]) -> Output {
        common::ratchet()
            .args(["ctl", "--endpoints", &self.grpc])
            .args(args)
            .envs(self.ctl_env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("the ratchet binary runs")
    }

    /// `ratchet ctl --json cluster status` against this pod, if it answers.
    fn status(&self) -> Option<Value> {
        let output = self.ctl(&["--json", "cluster", "status"]);
        output.status.success().then(|| serde_json::from_slice(&output.stdout).unwrap())
    }

    /// The node id persisted on the pod's volume.
    fn persisted_id(&self) -> u64 {
        let identity: Value = serde_json::from_str(&std::fs::read_to_string(self.volume.join("data/identity.json")).unwrap()).unwrap();
        identity["id"].as_u64().unwrap()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Layout {
    pods: Vec<Pod>,
    /// The backup CronJob's container, with `backup.enabled`.
    backup: Option<Container>,
    _dir: TempDir,
}

impl Layout {
    /// Renders the chart as release RELEASE with the CI default values plus `sets` (helm
    /// --set) and lays out its pods on loopback, without starting them.
    fn render(sets: &[&str]) -> Layout {
        Layout::render_release(RELEASE, sets)
    }

    fn render_release(release: &str, sets: &[&str]) -> Layout {
        let rendered = chart::render(release, sets);
        let dir = tempfile::tempdir().unwrap();
        let mut ca = Ca::new(dir.path().join("ca"));
        let rendered_pods = rendered["pods"].as_array().unwrap();

        // Every container port of every pod gets a loopback port of its own.
        let ports: Vec<BTreeMap<u64, String>> = rendered_pods
            .iter()
            .map(|pod| {
                let mut ports = BTreeMap::new();
                for container in pod["containers"].as_array().unwrap() {
                    for port in container["ports"].as_array().unwrap() {
                        ports.insert(port["containerPort"].as_u64().unwrap(), free_port().to_string());
                    }
                }
                ports
            })
            .collect();
        // Other pods are reached at <dns name>:<port>, and the client Service at the first pod.
        let mut remote = BTreeMap::new();
        for (pod, ports) in rendered_pods.iter().zip(&ports) {
            for (port, address) in ports {
                remote.insert(format!("{}:{port}", pod["dns"].as_str().unwrap()), address.clone());
            }
        }
        for (port, address) in &ports[0] {
            remote.insert(format!("{}:{port}", rendered["clientService"].as_str().unwrap()), address.clone());
        }

        let mut pods = Vec::new();
        for (pod, ports) in rendered_pods.iter().zip(&ports) {
            let name = pod["name"].as_str().unwrap().to_owned();
            let root = dir.path().join(&name);
            // A pod reaches itself at 0.0.0.0, 127.0.0.1 or localhost on its own ports.
            let mut addresses = remote.clone();
            for (port, address) in ports {
                for host in ["0.0.0.0", "127.0.0.1", "localhost"] {
                    addresses.insert(format!("{host}:{port}"), address.clone());
                }
            }
            let volumes = chart::lay_out_volumes(&root, &pod["volumes"], &mut ca, release);
            let mut containers = Vec::new();
            let mut init_containers = Vec::new();
            for container in pod["initContainers"].as_array().unwrap() {
                init_containers.push(lay_out_container(container, &volumes, &addresses, &root, &name));
            }
            let mut rendered_args = Vec::new();
            for container in pod["containers"].as_array().unwrap() {
                if container["name"] == "decider" {
                    rendered_args = strings(&container["args"]);
                }
                containers.push(lay_out_container(container, &volumes, &addresses, &root, &name));
            }
            pods.push(Pod {
                grpc: ports[&u64::from(GRPC_PORT)].clone(),
                volume: volumes["data"].clone(),
                rendered_dns: pod["dns"].as_str().unwrap().to_owned(),
                name,
                rendered_args,
                init_containers,
                containers,
                ctl_env: Vec::new(),
            });
        }
        // The test's own calls: an admin certificate from the pods' CA, if they have one.
        if ca.is_made() {
            let ctl_env = ca.admin_env("helm-rendered-test-operator");
            for pod in &mut pods {
                pod.ctl_env = ctl_env.clone();
            }
        }
        let backup = rendered["backup"].as_object().map(|pod| {
            let name = pod["name"].as_str().unwrap();
            let root = dir.path().join(name);
            let volumes = chart::lay_out_volumes(&root, &pod["volumes"], &mut ca, release);
            let [container] = pod["containers"].as_array().unwrap().as_slice() else {
                panic!("the backup pod has one container: {pod:?}");
            };
            lay_out_container(container, &volumes, &remote, &root, name)
        });
        Layout { pods, backup, _dir: dir }
    }

    fn logs(&self) -> String {
        self.pods.iter().map(Pod::logs).collect::<Vec<_>>().join("\n")
    }

    /// Waits until every running pod reports the same leader and `voters` voters, and
    /// returns each running pod's status by pod name.
    fn wait_for_group(&mut self, voters: usize) -> BTreeMap<String, Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(exited) = self.pods.iter_mut().find_map(Pod::exited_container) {
                panic!("{exited}\n{}", self.logs());
            }
            let statuses: BTreeMap<String, Option<Value>> = self
                .pods
                .iter()
                .filter(|p| p.is_running())
                .map(|p| (p.name.clone(), p.status()))
                .collect();
            if chart::agreed_leader(&statuses, voters).is_some() {
                return statuses.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
            }
            if Instant::now() > deadline {
                panic!("no group of {voters} voters with one leader: {statuses:#?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One rendered container as a process of this machine: its addresses mapped by
/// `addresses`, its mount paths moved to `volumes`' directories, `tini --` left out, and
/// the ratchet binary under test first on its PATH.
fn lay_out_container(
    container: &Value,
    volumes: &BTreeMap<String, PathBuf>,
    addresses: &BTreeMap<String, String>,
    root: &Path,
    pod: &str,
) -> Container {
    let name = container["name"].as_str().unwrap();
    let mounts: Vec<(String, PathBuf)> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                volumes[m["name"].as_str().unwrap()].clone(),
            )
        })
        .collect();
    let localize = |text: &str| relocate(&readdress(text, addresses), &mounts);
    let mut command = strings(&container["command"]);
    if command.len() >= 2 && command[0].ends_with("/tini") && command[1] == "--" {
        command.drain(..2);
    }
    // No command: the image's entrypoint, `tini -- ratchet`.
    if command.is_empty() {
        command.push("ratchet".to_owned());
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ratchet")).parent().unwrap();
    let mut env: Vec<(String, String)> = container["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), localize(v.as_str().unwrap())))
        .collect();
    env.push(("PATH".to_owned(), format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display())));
    let mut argv: Vec<String> = command.iter().chain(&strings(&container["args"])).map(|a| localize(a)).collect();
    for argument in argv.iter().chain(env.iter().map(|(_, v)| v)) {
        assert!(
            !argument.contains(".svc."),
            "{pod}/{name}: a cluster address was left unmapped in {argument:?}"
        );
    }
    Container {
        name: name.to_owned(),
        program: argv.remove(0),
        args: argv,
        env,
        log: root.join(format!("{name}.log")),
        child: None,
    }
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

/// Replaces every host:port in `text` that `addresses` knows; addresses sit between
/// `,` and `=` in lists like `NAME=ADDR,NAME=ADDR` and `ADDR,ADDR`.
fn readdress(text: &str, addresses: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut token = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if c == ',' || c == '=' || c == '\0' {
            out.push_str(addresses.get(&token).unwrap_or(&token));
            token.clear();
            if c != '\0' {
                out.push(c);
            }
        } else {
            token.push(c);
        }
    }
    out
}

/// Moves a path under a mount point to that volume's directory.
fn relocate(text: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount_path, directory) in mounts {
        if let Some(rest) = text.strip_prefix(mount_path.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{}{rest}", directory.display());
            }
        }
    }
    text.to_owned()
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("no {name} in {args:?}"));
    &args[at + 1]
}

#[test]
fn the_rendered_statefulset_founds_one_group_and_a_restarted_pod_rejoins_as_itself() {
    founds_one_group_and_a_restarted_pod_rejoins_as_itself(true);
}

#[test]
fn without_tls_the_rendered_statefulset_founds_one_group_and_a_restarted_pod_rejoins_as_itself() {
    founds_one_group_and_a_restarted_pod_rejoins_as_itself(false);
}

fn founds_one_group_and_a_restarted_pod_rejoins_as_itself(tls: bool) {
    let mut layout = Layout::render(if tls { &[] } else { &["tls.enabled=false"] });
    let names: Vec<String> = layout.pods.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names, ["ratchet-decider-0", "ratchet-decider-1", "ratchet-decider-2"]);

    // What the chart gives each pod: its name, its stable DNS name, and the same founders.
    let founders = names
        .iter()
        .map(|n| format!("{n}={n}.ratchet-decider-headless.ratchet.svc.cluster.local:{GRPC_PORT}"))
        .collect::<Vec<_>>()
        .join(",");
    for pod in &layout.pods {
        assert_eq!(flag(&pod.rendered_args, "--name"), pod.name);
        assert_eq!(flag(&pod.rendered_args, "--advertise"), format!("{}:{GRPC_PORT}", pod.rendered_dns));
        assert_eq!(
            pod.rendered_dns,
            format!("{}.ratchet-decider-headless.ratchet.svc.cluster.local", pod.name)
        );
        assert_eq!(flag(&pod.rendered_args, "--initial-cluster"), founders);
        if tls {
            assert_eq!(flag(&pod.rendered_args, "--cert"), "/etc/ratchet/mtls/tls.crt");
            assert_eq!(flag(&pod.rendered_args, "--key"), "/etc/ratchet/mtls/tls.key");
            assert_eq!(flag(&pod.rendered_args, "--ca"), "/etc/ratchet/mtls/ca.crt");
            assert!(!pod.rendered_args.contains(&"--insecure".to_owned()), "{:?}", pod.rendered_args);
            assert!(!pod.ctl_env.is_empty(), "the test's ctl calls carry an admin certificate");
        } else {
            assert!(pod.rendered_args.contains(&"--insecure".to_owned()), "{:?}", pod.rendered_args);
            assert!(!pod.rendered_args.contains(&"--cert".to_owned()), "{:?}", pod.rendered_args);
            assert!(pod.ctl_env.is_empty());
        }
    }

    // Pods start in any order (podManagementPolicy: Parallel, scheduled as nodes allow).
    for i in [2, 0, 1] {
        layout.pods[i].start();
        std::thread::sleep(Duration::from_millis(300));
    }
    let statuses = layout.wait_for_group(3);
    if tls {
        // The group answers only to a certificate from its CA.
        let anonymous = common::ratchet()
            .args(["ctl", "--endpoints", &layout.pods[0].grpc, "--json", "cluster", "status"])
            .env_remove("RATCHET_CERT")
            .env_remove("RATCHET_KEY")
            .env_remove("RATCHET_CA")
            .output()
            .unwrap();
        assert!(
            !anonymous.status.success(),
            "a TLS decider answered ratchet ctl without a certificate"
        );
    }
    let ids = chart::member_ids(&statuses["ratchet-decider-0"]);
    assert_eq!(ids.keys().cloned().collect::<Vec<_>>(), names, "members are named after their pods");
    for pod in &layout.pods {
        let status = &statuses[&pod.name];
        assert_eq!(chart::member_ids(status), ids, "{} sees the same members", pod.name);
        assert_eq!(
            status["node_id"].as_u64().unwrap(),
            pod.persisted_id(),
            "the id is the one on the volume"
        );
        let me = status["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == pod.name.as_str())
            .unwrap();
        assert_eq!(
            me["address"],
            pod.grpc.as_str(),
            "{} is known at the address it advertises",
            pod.name
        );
    }

    // Restart the leader's pod on its volume: the other two go on without it, and it
    // comes back as the same node, not as a new member.
    let leader_id = statuses["ratchet-decider-0"]["leader_id"].as_u64().unwrap();
    let leader = layout.pods.iter().position(|p| ids[&p.name] == leader_id).unwrap();
    layout.pods[leader].kill();
    layout.wait_for_group(3);
    layout.pods[leader].start();
    let after = layout.wait_for_group(3);
    for pod in &layout.pods {
        assert_eq!(
            chart::member_ids(&after[&pod.name]),
            ids,
            "{}: membership unchanged after the restart",
            pod.name
        );
        assert_eq!(after[&pod.name]["node_id"].as_u64().unwrap(), ids[&pod.name]);
    }
    let restarted = &layout.pods[leader];
    assert_eq!(restarted.persisted_id(), ids[&restarted.name]);

    // The founders' join sidecars found nothing to do and recorded the membership.
    let deadline = Instant::now() + Duration::from_secs(30);
    for pod in &layout.pods {
        let marker = pod.volume.join("joined");
        while !marker.exists() {
            assert!(Instant::now() < deadline, "no join marker for {}\n{}", pod.name, pod.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), ids[&pod.name].to_string());
        assert!(!pod.log_of("join").contains("adding"), "{}", pod.logs());
    }
}

#[test]
fn a_pod_beyond_the_founding_members_joins_as_a_learner_and_is_promoted() {
    // Scale-up: four replicas, of which the first three found the group.
    let mut layout = Layout::render(&["decider.replicas=4", "decider.join.retrySeconds=1"]);
    assert_eq!(layout.pods.len(), 4);
    let founders = flag(&layout.pods[3].rendered_args, "--initial-cluster").to_owned();
    assert_eq!(founders.split(',').count(), 3);
    assert!(!founders.contains("ratchet-decider-3="), "{founders}");

    for pod in &mut layout.pods {
        pod.start();
    }
    let statuses = layout.wait_for_group(4);
    let newcomer = &layout.pods[3];
    let status = &statuses[&newcomer.name];
    assert_eq!(status["node_id"].as_u64().unwrap(), newcomer.persisted_id());
    assert!(["follower", "leader"].contains(&status["state"].as_str().unwrap()), "{status}");
    let decider_log = newcomer.log_of("decider");
    assert!(
        decider_log.contains("is not among the founding members"),
        "start-decider.sh dropped --initial-cluster: {decider_log}"
    );
    let join_log = newcomer.log_of("join");
    assert!(join_log.contains("as a learner") && join_log.contains("promoting"), "{join_log}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !newcomer.volume.join("joined").exists() {
        assert!(Instant::now() < deadline, "no join marker\n{}", newcomer.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read_to_string(newcomer.volume.join("joined")).unwrap().trim(),
        newcomer.persisted_id().to_string()
    );
}

#[test]
fn a_pod_whose_volume_is_lost_comes_back_as_a_new_member_once_the_old_one_is_removed() {
    let mut layout = Layout::render(&["decider.join.retrySeconds=1"]);
    for pod in &mut layout.pods {
        pod.start();
    }
    let statuses = layout.wait_for_group(3);
    let ids = chart::member_ids(&statuses["ratchet-decider-0"]);

    // ratchet-decider-1 loses its volume: a new, empty claim under the same pod name.
    let lost = 1;
    layout.pods[lost].kill();
    std::fs::remove_dir_all(&layout.pods[lost].volume).unwrap();
    std::fs::create_dir_all(&layout.pods[lost].volume).unwrap();

    // Its check-identity init container finds the old member still listed and holds the
    // pod: nothing answers at the old member's address, and the group carries on.
    let pod = &mut layout.pods[lost];
    pod.init_containers[0].spawn("ratchet-decider-1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pod
        .log_of("check-identity")
        .contains("still lists a member named ratchet-decider-1")
    {
        assert!(Instant::now() < deadline, "check-identity did not hold the pod\n{}", pod.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        pod.init_containers[0].child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "still waiting"
    );
    let meanwhile = layout.wait_for_group(3);
    assert_eq!(
        chart::member_ids(&meanwhile["ratchet-decider-0"]),
        ids,
        "nothing changed without the operator"
    );

    // The operator's procedure (NOTES.txt): remove the old member. The pod then starts as
    // a new node, and its join sidecar adds it and promotes it.
    let removed = layout.pods[0].ctl(&["cluster", "remove", "--name", "ratchet-decider-1"]);
    assert!(
        removed.status.success(),
        "cluster remove: {}\n{}",
        String::from_utf8_lossy(&removed.stderr),
        layout.logs()
    );
    let pod = &mut layout.pods[lost];
    pod.wait_for_init(0, Duration::from_secs(30));
    pod.start_containers();
    let new_id = {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pod.volume.join("data/identity.json").exists() {
            assert!(Instant::now() < deadline, "no identity drawn\n{}", pod.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        pod.persisted_id()
    };
    assert_ne!(new_id, ids["ratchet-decider-1"], "a new volume is a new node");
    let after = layout.wait_for_group(3);
    for pod in &layout.pods {
        let members = chart::member_ids(&after[&pod.name]);
        assert_eq!(members.len(), 3, "{}: {members:?}", pod.name);
        assert_eq!(members["ratchet-decider-1"], new_id, "{} sees the new node", pod.name);
        assert_eq!(members["ratchet-decider-0"], ids["ratchet-decider-0"]);
        assert_eq!(members["ratchet-decider-2"], ids["ratchet-decider-2"]);
    }
}

/// This release's snapshots in a backup directory, oldest first.
fn snapshots(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(&format!("{RELEASE}-")) && name.ends_with(".snap") && snapshot_time(name).is_some())
        .collect();
    names.sort();
    names
}

/// The UTC time in a snapshot's name, RELEASE-YYYYMMDDTHHMMSSZ.snap.
fn snapshot_time(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.strip_prefix(&format!("{RELEASE}-"))?.strip_suffix(".snap")?;
    Some(NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?.and_utc())
}

#[test]
fn the_rendered_backup_cronjob_saves_snapshots_that_restore_into_a_new_release() {
    let mut layout = Layout::render(&["backup.enabled=true", "backup.keep=2"]);
    for pod in &mut layout.pods {
        pod.start();
    }
    layout.wait_for_group(3);
    let added = layout.pods[0].ctl(&["tenant", "add", "bear"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));

    // What else is on the volume: a .part of a run killed long ago, another release's
    // snapshot, an operator's copy. Only the first is this CronJob's to remove.
    let mut backup = layout.backup.take().expect("backup.enabled renders the CronJob");
    let dir = PathBuf::from(&backup.env.iter().find(|(k, _)| k == "BACKUP_DIR").unwrap().1);
    let stale = dir.join(format!("{RELEASE}-20200101T000000Z.part"));
    std::fs::write(&stale, "a run killed mid-save").unwrap();
    let aged = Command::new("touch").args(["-d", "2 hours ago"]).arg(&stale).status().unwrap();
    assert!(aged.success());
    let others = ["other-20200101T000000Z.snap", "ratchet-manual-copy.snap"];
    for other in others {
        std::fs::write(dir.join(other), "not this CronJob's").unwrap();
    }

    // Three runs, as the CronJob makes them one after another (a second apart: the names
    // have one-second resolution). Each saves a snapshot named with the time it ran.
    let mut saved = Vec::new();
    for _ in 0..3 {
        let started = Utc::now() - chrono::TimeDelta::seconds(1);
        backup.spawn("ratchet-backup");
        let status = backup.wait_for_exit("ratchet-backup", Duration::from_secs(60));
        assert!(
            status.success(),
            "the backup run failed ({status})\n{}\n{}",
            backup.log(),
            layout.logs()
        );
        let newest = snapshots(&dir).pop().expect("a snapshot was saved");
        let at = snapshot_time(&newest).unwrap();
        assert!(
            started <= at && at <= Utc::now(),
            "{newest} is named with the UTC time it was saved"
        );
        assert!(!saved.contains(&newest), "{newest} saved twice: {saved:?}");
        saved.push(newest);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let log = backup.log();
    assert!(log.contains("checksum verified"), "{log}");

    // The newest two are kept, the other files alone, the stale .part gone.
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut expected = vec![saved[1].clone(), saved[2].clone(), others[0].to_owned(), others[1].to_owned()];
    expected.sort();
    assert_eq!(left, expected, "{log}");
    assert!(log.contains(&format!("removed {} (keeping the newest 2)", saved[0])), "{log}");
    assert!(log.contains("left over from a run that did not finish"), "{log}");

    // The group is lost; the newest snapshot, copied out, restores into a new release:
    // each founding member's volume seeded with `ratchet restore` and the --initial-cluster
    // that the new StatefulSet renders, then the pods started as rendered.
    let copied = tempfile::tempdir().unwrap();
    let snapshot = copied.path().join(&saved[2]);
    std::fs::copy(dir.join(&saved[2]), &snapshot).unwrap();
    drop(layout);
    let mut restored = Layout::render_release("ratchet-restored", &[]);
    for pod in &restored.pods {
        let decider = pod.containers.iter().find(|c| c.name == "decider").unwrap();
        let printed = common::stdout_of([
            "restore",
            "--snapshot",
            snapshot.to_str().unwrap(),
            "--name",
            &pod.name,
            "--data-dir",
            flag(&decider.args, "--data-dir"),
            "--initial-cluster",
            flag(&decider.args, "--initial-cluster"),
        ]);
        assert!(printed.contains("seeded from backup-"), "{printed}");
    }
    for pod in &mut restored.pods {
        pod.start();
        assert!(
            pod.log_of("check-identity").contains("holds this node's identity"),
            "{}",
            pod.logs()
        );
    }
    restored.wait_for_group(3);

    // Every node holds the same state, at the same index: the backup's.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let digests: Vec<(u64, String)> = restored
            .pods
            .iter()
            .map(|pod| {
                let status = pod.status().expect("a restored node answers");
                (
                    status["digest_index"].as_u64().unwrap(),
                    status["state_digest"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if !digests[0].1.is_empty() && digests.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restored nodes disagree: {digests:?}\n{}",
            restored.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let tenants = restored.pods[2].ctl(&["tenant", "list"]);
    assert!(
        String::from_utf8_lossy(&tenants.stdout).contains("bear"),
        "{}",
        String::from_utf8_lossy(&tenants.stderr)
    );
}
