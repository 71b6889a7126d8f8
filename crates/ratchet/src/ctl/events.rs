//! `ratchet ctl events --tenant T`: a tenant's notifications, oldest first, and whether its
//! webhook took each of them.

use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{nonempty, or_dash, Output};
use super::Admin;
use crate::table;

#[derive(Serialize)]
pub struct Events {
    tenant: String,
    webhook_url: Option<String>,
    events: Vec<Event>,
}

#[derive(Serialize)]
struct Event {
    id: String,
    at: String,
    kind: String,
    server_fqdn: Option<String>,
    message: String,
    delivered: bool,
}

pub async fn run(admin: &mut Admin, tenant: String) -> anyhow::Result<Events> {
    let request = pb::ListEventsRequest { tenant: tenant.clone() };
    let reply = admin.list_events(request).await.map_err(refusal)?.into_inner();
    let events = reply.events.into_iter().map(|e| Event {
        server_fqdn: nonempty(&e.server_fqdn),
        id: e.id,
        at: e.at,
        kind: e.kind,
        message: e.message,
        delivered: e.delivered,
    });
    Ok(Events {
        tenant,
        webhook_url: nonempty(&reply.webhook_url),
        events: events.collect(),
    })
}

impl Output for Events {
    fn human(&self) {
        println!("tenant {}: webhook {}", self.tenant, or_dash(self.webhook_url.as_deref()));
        let rows: Vec<Vec<String>> = self
            .events
            .iter()
            .map(|e| {
                let delivered = if e.delivered { "yes" } else { "no" };
                vec![
                    e.at.clone(),
                    e.kind.clone(),
                    or_dash(e.server_fqdn.as_deref()),
                    delivered.to_owned(),
                    e.message.clone(),
                    e.id.clone(),
                ]
            })
            .collect();
        table::print(&["AT", "KIND", "SERVER", "DELIVERED", "MESSAGE", "ID"], &rows);
    }
}
