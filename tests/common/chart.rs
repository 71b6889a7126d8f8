//! The Helm chart's pods as `helm/check.py pods` renders them, and what they mount: the
//! ConfigMaps' files and the certificate Secrets, made with the real `ratchet certs`.
//! tests/helm_rendered.rs runs the decider pods as processes on loopback, tests/image.rs
//! runs them and an edge pod as containers of the image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const CHECK_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../helm/check.py");

/// Each component's certificate Secret (`<fullname>-<component>-mtls`) and the role of its
/// certificate, as helm/ratchet/README.md ("Transport security") lists them.
const TLS_ROLES: [(&str, &str); 5] = [
    ("decider", "peer"),
    ("edge", "edge"),
    ("policy", "admin"),
    ("test", "viewer"),
    ("backup", "admin"),
];

/// `helm/check.py pods` for the release `release` in namespace `ratchet`, with the CI
/// default values plus `sets` (helm --set): the decider pods, the edge pod, the backup pod.
pub fn render(release: &str, sets: &[&str]) -> Value {
    let mut command = Command::new("python3");
    command.arg(CHECK_PY).args([
        "pods",
        "--values",
        "ci/default-values.yaml",
        "--release",
        release,
        "--namespace",
        "ratchet",
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command
        .output()
        .expect("python3 runs (deploy/install-deps.sh installs what helm/check.py needs)");
    assert!(
        output.status.success(),
        "helm/check.py pods failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The cluster CA made with `ratchet certs init`, on first use, and the certificates
/// issued from it with `ratchet certs issue`, each once.
pub struct Ca {
    dir: PathBuf,
    made: bool,
    issued: BTreeMap<String, (PathBuf, PathBuf)>,
}

impl Ca {
    pub fn new(dir: PathBuf) -> Ca {
        Ca {
            dir,
            made: false,
            issued: BTreeMap::new(),
        }
    }

    pub fn is_made(&self) -> bool {
        self.made
    }

    /// The CA's certificate, what a Secret's ca.crt holds.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// DIR/NAME.pem and DIR/NAME-key.pem, issued for `role` the first time they are asked for.
    pub fn issue(&mut self, role: &str, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.to_str().unwrap().to_owned();
        if !self.made {
            super::stdout_of(["certs", "init", "--dir", &dir]);
            self.made = true;
        }
        self.issued
            .entry(name.to_owned())
            .or_insert_with(|| {
                super::stdout_of(["certs", "issue", "--dir", &dir, "--role", role, "--name", name]);
                (self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}-key.pem")))
            })
            .clone()
    }

    /// RATCHET_CERT, RATCHET_KEY and RATCHET_CA of an admin certificate named `name`, for
    /// a test's own `ratchet ctl` calls.
    pub fn admin_env(&mut self, name: &str) -> Vec<(String, String)> {
        let (cert, key) = self.issue("admin", name);
        vec![
            ("RATCHET_CERT".to_owned(), cert.display().to_string()),
            ("RATCHET_KEY".to_owned(), key.display().to_string()),
            ("RATCHET_CA".to_owned(), self.cert().display().to_string()),
        ]
    }
}

/// Creates each volume of a pod under `root`: ConfigMaps with their files, a certificate
/// Secret with tls.crt, tls.key and ca.crt issued by `ca` for its component of `release`,
/// the claims and emptyDirs empty. Returns volume name -> directory.
pub fn lay_out_volumes(root: &Path, volumes: &Value, ca: &mut Ca, release: &str) -> BTreeMap<String, PathBuf> {
    let mut directories = BTreeMap::new();
    for (name, source) in volumes.as_object().unwrap() {
        let directory = root.join("volumes").join(name);
        std::fs::create_dir_all(&directory).unwrap();
        if let Some(files) = source["configMap"]["files"].as_object() {
            for (file, content) in files {
                std::fs::write(directory.join(file), content.as_str().unwrap()).unwrap();
            }
        } else if let Some(secret) = source["secret"]["secretName"].as_str() {
            let (component, role) = TLS_ROLES
                .iter()
                .find(|(component, _)| secret == format!("{release}-{component}-mtls"))
                .unwrap_or_else(|| panic!("volume {name}: Secret {secret} is no component's certificate"));
            let (cert, key) = ca.issue(role, &format!("{release}-{component}"));
            std::fs::copy(cert, directory.join("tls.crt")).unwrap();
            std::fs::copy(key, directory.join("tls.key")).unwrap();
            std::fs::copy(ca.cert(), directory.join("ca.crt")).unwrap();
        } else {
            assert!(
                source.get("persistentVolumeClaim").is_some() || source.get("emptyDir").is_some(),
                "volume {name}: {source}"
            );
        }
        directories.insert(name.clone(), directory);
    }
    directories
}

/// Each member's node id by name, from `ratchet ctl --json cluster status`.
pub fn member_ids(status: &Value) -> BTreeMap<String, u64> {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_owned(), m["id"].as_u64().unwrap()))
        .collect()
}

/// The leader every pod's `cluster status` names, once every pod answered, none is without
/// a leader and each counts `voters` voters; `None` until then.
pub fn agreed_leader(statuses: &BTreeMap<String, Option<Value>>, voters: usize) -> Option<u64> {
    let mut leaders = Vec::new();
    for status in statuses.values() {
        let status = status.as_ref()?;
        let voting = status["members"].as_array()?.iter().filter(|m| m["role"] != "learner").count();
        let leader = status["leader_id"].as_u64().filter(|id| *id != 0)?;
        if voting != voters {
            return None;
        }
        leaders.push(leader);
    }
    let first = *leaders.first()?;
    leaders.iter().all(|l| *l == first).then_some(first)
}
