//! `ratchet ctl events --tenant T`: a tenant's notifications, oldest first, and whether its
//! webhook took each of them, a page at a time (see `pages`).

use clap::Args;
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{nonempty, or_dash, Output};
use super::pages::{PageArgs, Pager};
use super::Admin;
use crate::table;

#[derive(Args)]
pub struct EventsArgs {
    #[arg(long)]
    tenant: String,
    #[command(flatten)]
    pages: PageArgs,
}

#[derive(Serialize)]
pub struct Events {
    tenant: String,
    webhook_url: Option<String>,
    events: Vec<Event>,
    /// Set when one page was asked for and more follow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
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

pub async fn run(admin: &mut Admin, args: EventsArgs) -> anyhow::Result<Events> {
    let mut pager = Pager::new(args.pages);
    let mut listed = Events {
        tenant: args.tenant,
        webhook_url: None,
        events: Vec::new(),
        next_page_token: None,
    };
    while let Some((page_size, page_token)) = pager.next_request() {
        let request = pb::ListEventsRequest {
            tenant: listed.tenant.clone(),
            page_size,
            page_token,
        };
        let reply = admin.list_events(request).await.map_err(refusal)?.into_inner();
        listed.webhook_url = nonempty(&reply.webhook_url);
        listed.events.extend(reply.events.into_iter().map(|e| Event {
            server_fqdn: nonempty(&e.server_fqdn),
            id: e.id,
            at: e.at,
            kind: e.kind,
            message: e.message,
            delivered: e.delivered,
        }));
        pager.answered(reply.next_page_token);
    }
    listed.next_page_token = pager.next_page_token();
    Ok(listed)
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
        if let Some(token) = &self.next_page_token {
            println!("next page: --page-token {token}");
        }
    }
}
