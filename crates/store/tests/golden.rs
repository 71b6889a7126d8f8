//! Golden files of the stored and replicated format: one file per record kind and per
//! log entry kind, in `tests/golden/`. Each value below must encode to exactly its file's
//! bytes and its file must decode to exactly the value, so a change that would silently
//! alter what is on disk or on the wire fails here. A deliberate format change adds new
//! files (and a new format version); it never rewrites the old ones. To write the files
//! of a new kind: `RATCHET_BLESS=1 cargo test -p ratchet-store --test golden`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership};
use ratchet_policy::clock::Interval;
use ratchet_policy::{Episode, Mode, PauseLedger, Policy, Retention, ServerRecord, TenantMode};
use ratchet_store::codec::{decode, encode, Codec, FORMAT_VERSION};
use ratchet_store::model::{Counts, LastFlush};
use ratchet_store::types::{Entry, SnapshotMeta, StoredMembership};
use ratchet_store::VersionedPolicy;
use ratchet_store::{
    AuditRecord, Command, Connector, Event, EventKind, Node, Notice, Observation, Request, ServerEntry, ServerSighting, SweepCursor,
    SweepPhase, Tenant,
};

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap() + chrono::Duration::nanoseconds(123_456_789)
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.v{FORMAT_VERSION}.bin"))
}

/// Checks one value against its golden file, or writes the file when blessing.
fn check<T: Codec + PartialEq + Debug>(name: &str, value: &T) {
    let path = golden_path(name);
    let bytes = encode(value);
    if std::env::var_os("RATCHET_BLESS").is_some() && !path.exists() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (bless new kinds with RATCHET_BLESS=1)", path.display()));
    assert_eq!(bytes, golden, "{name}: encoding changed from {}", path.display());
    assert_eq!(
        &decode::<T>(&golden).unwrap(),
        value,
        "{name}: the golden file no longer decodes to the same value"
    );
}

fn tenant() -> Tenant {
    let mut pauses = PauseLedger::default();
    pauses.request(90, 7, &[], Some("r-1"), at(2, 9)).unwrap();
    pauses.request(90, 3, &[], Some("r-2"), at(3, 9)).unwrap();
    pauses.end(None, at(4, 9)).unwrap();
    Tenant {
        name: "bear".into(),
        created_at: at(1, 0),
        connectors: vec![
            Connector {
                tenant: "bear".into(),
                cidr: Some("10.0.0.0/8".parse().unwrap()),
                cert_name: None,
            },
            Connector {
                tenant: "bear".into(),
                cidr: Some("2001:db8::/32".parse().unwrap()),
                cert_name: Some("mx.bear.example".into()),
            },
        ],
        pauses,
        daily: BTreeMap::from([(
            "2026-03-02".to_owned(),
            Counts {
                accepted: 10,
                throttled: 2,
                blocked: 1,
                ..Counts::default()
            },
        )]),
        webhook_url: Some("https://hooks.bear.example/ratchet".into()),
        webhook_secret: Some("5bdcc146bf60754e6a042426089575c7".into()),
        notices: BTreeSet::from(["pause-ends-4-1".to_owned()]),
        mode: TenantMode::Enforce,
    }
}

/// A tenant in report-only mode, whose day counted messages that enforcing would have
/// refused (added with format v1's `Tenant.mode` and `Counts.would_*`).
fn tenant_report_only() -> Tenant {
    let mut tenant = tenant();
    tenant.mode = TenantMode::ReportOnly;
    tenant.daily.insert(
        "2026-03-03".to_owned(),
        Counts {
            accepted: 12,
            would_throttle: 3,
            would_block: 4,
            ..Counts::default()
        },
    );
    tenant
}

/// The default policy with one product report-only and one off (format v1's `Product.mode`).
fn policy_with_product_modes() -> Policy {
    let mut policy = Policy::default();
    for product in &mut policy.products {
        product.mode = match product.name.as_str() {
            "Exchange 2016" => Mode::ReportOnly,
            "Exchange 2013" => Mode::Off,
            _ => Mode::Enforce,
        };
    }
    policy
}

/// A tenant with pauses of single servers beside its own (added with format v1's
/// `PauseSpan.server` and `PauseGrant.servers`).
fn tenant_with_server_pauses() -> Tenant {
    let mut tenant = tenant();
    let servers = ["exch1.bear.local".to_owned(), "exch2.bear.local".to_owned()];
    tenant.pauses.request(90, 5, &servers, Some("r-3"), at(10, 9)).unwrap();
    tenant.pauses.end(Some("exch2.bear.local"), at(12, 9)).unwrap();
    tenant
}

fn server() -> ServerEntry {
    ServerEntry {
        record: ServerRecord {
            tenant: "bear".into(),
            server_fqdn: "exch1.bear.local".into(),
            build: "15.0.1497.48".into(),
            last_seen: at(20, 12),
            episode: Some(Episode {
                first_seen: at(1, 8),
                remediated_gaps: vec![Interval::new(at(5, 0), at(6, 0))],
                remediated_at: None,
            }),
        },
        decommissioned_at: None,
        counters: BTreeMap::from([
            (
                1,
                Counts {
                    accepted: 40,
                    throttled: 0,
                    blocked: 0,
                    ..Counts::default()
                },
            ),
            (
                2,
                Counts {
                    accepted: 30,
                    throttled: 5,
                    blocked: 0,
                    ..Counts::default()
                },
            ),
        ]),
        notices: BTreeSet::from(["stage-2".to_owned()]),
    }
}

fn event() -> Event {
    Event {
        id: "42-1".into(),
        tenant: "bear".into(),
        at: at(2, 9),
        kind: EventKind::PauseStarted,
        server_fqdn: None,
        message: "enforcement paused for 7 days".into(),
        delivered: true,
    }
}

fn membership() -> Membership<u64, Node> {
    let node = |name: &str| Node {
        name: name.into(),
        address: format!("{name}.deciders:7001"),
    };
    Membership::new(
        vec![BTreeSet::from([11, 22, 33])],
        BTreeMap::from([(11, node("d0")), (22, node("d1")), (33, node("d2")), (44, node("learner"))]),
    )
}

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(3, 22), index)
}

fn entry(index: u64, payload: EntryPayload<ratchet_store::TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(index),
        payload,
    }
}

fn commands() -> Vec<(&'static str, Command)> {
    vec![
        ("add_tenant", Command::AddTenant { name: "bear".into() }),
        (
            "add_connector",
            Command::AddConnector {
                tenant: "bear".into(),
                cidr: Some("192.0.2.0/24".parse().unwrap()),
                cert_name: Some("mx.bear.example".into()),
            },
        ),
        (
            "sight",
            Command::Sight {
                sightings: vec![ServerSighting {
                    tenant: "bear".into(),
                    server_fqdn: "exch1.bear.local".into(),
                    build: "15.0.1497.48".into(),
                    seen_at: at(20, 12),
                }],
            },
        ),
        (
            "observe",
            Command::Observe {
                node_id: 2,
                flush_id: 17,
                observations: vec![Observation {
                    tenant: "bear".into(),
                    server_fqdn: "exch1.bear.local".into(),
                    build: "15.0.1497.48".into(),
                    last_seen: at(20, 12),
                    counts: vec![(
                        2,
                        Counts {
                            accepted: 3,
                            throttled: 1,
                            blocked: 0,
                            ..Counts::default()
                        },
                    )],
                }],
            },
        ),
        (
            "count",
            Command::Count {
                origin: 0x5eed0fed6e,
                sequence: 42,
                observations: vec![Observation {
                    tenant: "bear".into(),
                    server_fqdn: "exch1.bear.local".into(),
                    build: "15.0.1497.48".into(),
                    last_seen: at(20, 12),
                    counts: vec![(
                        3,
                        Counts {
                            accepted: 0,
                            throttled: 2,
                            blocked: 5,
                            ..Counts::default()
                        },
                    )],
                }],
            },
        ),
        (
            "import_server",
            Command::ImportServer {
                tenant: "bear".into(),
                server_fqdn: "old.bear.local".into(),
                build: "15.0.1497.2".into(),
                first_seen: at(1, 0),
            },
        ),
        (
            "decommission",
            Command::Decommission {
                tenant: "bear".into(),
                server_fqdn: "old.bear.local".into(),
            },
        ),
        (
            "pause",
            Command::Pause {
                tenant: "bear".into(),
                days: 7,
                servers: Vec::new(),
                request_id: Some("r-1".into()),
            },
        ),
        (
            "pause_servers",
            Command::Pause {
                tenant: "bear".into(),
                days: 30,
                servers: vec!["exch1.bear.local".into(), "exch2.bear.local".into()],
                request_id: Some("r-3".into()),
            },
        ),
        (
            "end_pause_server",
            Command::EndPause {
                tenant: "bear".into(),
                server: Some("exch2.bear.local".into()),
            },
        ),
        (
            "end_pause",
            Command::EndPause {
                tenant: "bear".into(),
                server: None,
            },
        ),
        (
            "set_policy",
            Command::SetPolicy {
                policy: Box::new(Policy::default()),
                effective_at: None,
            },
        ),
        (
            "set_policy_scheduled",
            Command::SetPolicy {
                policy: Box::new(Policy::default()),
                effective_at: Some(at(21, 0)),
            },
        ),
        (
            "set_webhook",
            Command::SetWebhook {
                tenant: "bear".into(),
                url: Some("https://hooks.bear.example/ratchet".into()),
                secret: Some("5bdcc146bf60754e6a042426089575c7".into()),
            },
        ),
        (
            "notify",
            Command::Notify {
                notices: vec![Notice {
                    tenant: "bear".into(),
                    server_fqdn: Some("exch1.bear.local".into()),
                    key: "stage-2".into(),
                    kind: EventKind::StageEntered,
                    message: "exch1.bear.local entered stage 2".into(),
                }],
            },
        ),
        (
            "mark_delivered",
            Command::MarkDelivered {
                tenant: "bear".into(),
                ids: vec!["42-1".into()],
            },
        ),
        (
            "audit",
            Command::Audit {
                action: "cluster promote d3".into(),
                tenant: None,
                outcome: "ok".into(),
            },
        ),
        (
            "set_tenant_mode",
            Command::SetTenantMode {
                tenant: "bear".into(),
                mode: TenantMode::ReportOnly,
            },
        ),
        ("remove_tenant", Command::RemoveTenant { tenant: "bear".into() }),
        (
            "remove_connector",
            Command::RemoveConnector {
                tenant: "bear".into(),
                cidr: Some("192.0.2.0/24".parse().unwrap()),
                cert_name: Some("mx.bear.example".into()),
            },
        ),
        (
            "sweep",
            Command::Sweep {
                resume: None,
                budget: 10_000,
            },
        ),
        (
            "sweep_resumed",
            Command::Sweep {
                resume: Some(SweepCursor {
                    phase: SweepPhase::Servers,
                    from: b"bear\0exch7.bear.local".to_vec(),
                }),
                budget: 10_000,
            },
        ),
    ]
}

/// An event of each kind this release added, as apply raises them.
fn events_of_new_kinds() -> Vec<(&'static str, Event)> {
    vec![
        (
            "record_event_connector_removed",
            Event {
                id: "43-1".into(),
                tenant: "bear".into(),
                at: at(3, 9),
                kind: EventKind::ConnectorRemoved,
                server_fqdn: None,
                message: "connector 192.0.2.0/24 removed: mail from it is no longer attributed to bear".into(),
                delivered: false,
            },
        ),
        (
            "record_event_servers_forgotten",
            Event {
                id: "44-1".into(),
                tenant: "bear".into(),
                at: at(4, 9),
                kind: EventKind::ServersForgotten,
                server_fqdn: None,
                message: "2 servers not seen for 400 days forgotten: exch1.bear.local, exch2.bear.local".into(),
                delivered: true,
            },
        ),
    ]
}

#[test]
fn records_match_their_golden_files() {
    check("record_tenant", &tenant());
    check("record_tenant_server_pauses", &tenant_with_server_pauses());
    check("record_tenant_report_only", &tenant_report_only());
    check(
        "record_policy_product_modes",
        &VersionedPolicy {
            version: 19,
            policy: policy_with_product_modes(),
            effective_at: None,
        },
    );
    check(
        "record_event_mode_changed",
        &Event {
            kind: EventKind::ModeChanged,
            message: "enforcement mode changed from enforce to report-only".into(),
            ..event()
        },
    );
    check("record_server", &server());
    check("record_event", &event());
    check(
        "record_policy",
        &VersionedPolicy {
            version: 17,
            policy: Policy::default(),
            effective_at: None,
        },
    );
    check(
        "record_policy_scheduled",
        &VersionedPolicy {
            version: 18,
            policy: Policy::default(),
            effective_at: Some(at(21, 0)),
        },
    );
    check(
        "record_policy_retention",
        &VersionedPolicy {
            version: 19,
            policy: Policy {
                retention: Retention {
                    forget_after_days: 30,
                    keep_events_days: 90,
                },
                ..Policy::default()
            },
            effective_at: None,
        },
    );
    for (name, event) in events_of_new_kinds() {
        check(name, &event);
    }
    check(
        "record_count_flush",
        &LastFlush {
            flush_id: 42,
            at: Some(at(20, 12)),
        },
    );
    check("record_clock", &at(20, 12));
    check("record_applied", &log_id(120));
    check("record_vote", &openraft::Vote::new_committed(3, 22));
    check(
        "record_audit",
        &AuditRecord {
            index: 101,
            at: at(10, 11),
            actor: "spiffe://ratchet.local/operator/alice".into(),
            action: "pause 3 days request_id=r-2".into(),
            tenant: Some("bear".into()),
            outcome: "refused: days: only 2 pause days remain".into(),
        },
    );
    check("record_membership", &StoredMembership::new(Some(log_id(1)), membership()));
    check(
        "record_snapshot_meta",
        &SnapshotMeta {
            last_log_id: Some(log_id(120)),
            last_membership: StoredMembership::new(Some(log_id(1)), membership()),
            snapshot_id: "3-22-120-0".into(),
        },
    );
}

#[test]
fn log_entries_of_every_kind_match_their_golden_files() {
    check("entry_blank", &entry(1, EntryPayload::Blank));
    check("entry_membership", &entry(2, EntryPayload::Membership(membership())));
    for (name, command) in commands() {
        let request = Request {
            at: at(10, 10),
            command,
            trace_parent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            actor: None,
        };
        check(&format!("entry_{name}"), &entry(100, EntryPayload::Normal(request)));
    }
    let by_operator = Request {
        at: at(10, 11),
        command: Command::EndPause {
            tenant: "bear".into(),
            server: None,
        },
        trace_parent: None,
        actor: Some("spiffe://ratchet.local/operator/alice".into()),
    };
    check("entry_end_pause_by_operator", &entry(101, EntryPayload::Normal(by_operator)));
}

#[test]
fn fields_a_newer_release_added_are_ignored() {
    let mut bytes = encode(&tenant());
    // Field 99, varint 1: unknown to this release.
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    assert_eq!(decode::<Tenant>(&bytes).unwrap(), tenant());
}

#[test]
fn a_command_this_release_does_not_know_is_refused_loudly() {
    use ratchet_store::codec::pb;
    let unknown = pb::Entry {
        log_id: Some(log_id(5).to_message()),
        payload: Some(pb::entry::Payload::Request(pb::Request {
            at: Some(at(1, 0).to_message()),
            command: Some(pb::Command { command: None }),
            trace_parent: String::new(),
            actor: String::new(),
        })),
    };
    let mut bytes = vec![FORMAT_VERSION];
    prost::Message::encode(&unknown, &mut bytes).unwrap();
    let error = decode::<Entry>(&bytes).unwrap_err().to_string();
    assert!(error.contains("upgrade this node"), "{error}");
}

#[test]
fn a_tenant_record_or_command_that_says_off_is_refused() {
    use ratchet_store::codec::pb;
    let mut message = tenant().to_message();
    message.mode = pb::EnforcementMode::Off.into();
    let mut bytes = vec![FORMAT_VERSION];
    prost::Message::encode(&message, &mut bytes).unwrap();
    let error = decode::<Tenant>(&bytes).unwrap_err().to_string();
    assert!(error.contains("tenant.mode") && error.contains("only a product"), "{error}");

    let command = pb::Command {
        command: Some(pb::command::Command::SetTenantMode(pb::SetTenantMode {
            tenant: "bear".into(),
            mode: 7,
        })),
    };
    let error = Command::from_message(command).unwrap_err().to_string();
    assert!(error.contains("set_tenant_mode.mode") && error.contains('7'), "{error}");
}
