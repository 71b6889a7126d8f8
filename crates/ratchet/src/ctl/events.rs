//! `ratchet ctl events --tenant T`: a tenant's notifications, oldest first, and whether its
//! webhook took each of them. The decider lists them a page at a time; ctl follows the
//! pages and prints them all, unless `--page-size` or `--page-token` asks for one page.

use clap::Args;
use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{nonempty, or_dash, Output};
use super::Admin;
use crate::table;

#[derive(Args)]
pub struct EventsArgs {
    #[arg(long)]
    tenant: String,
    /// Events per request (the decider's default: 1,000; at most 10,000). Prints only one
    /// page of this size, and the token of the next.
    #[arg(long)]
    page_size: Option<u32>,
    /// Prints only the page this token starts (a token an earlier page printed).
    #[arg(long)]
    page_token: Option<String>,
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
    let one_page = args.page_size.is_some() || args.page_token.is_some();
    let mut listed = Events {
        tenant: args.tenant,
        webhook_url: None,
        events: Vec::new(),
        next_page_token: None,
    };
    let mut page_token = args.page_token.unwrap_or_default();
    loop {
        let request = pb::ListEventsRequest {
            tenant: listed.tenant.clone(),
            page_size: args.page_size.unwrap_or(0),
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
        if one_page {
            listed.next_page_token = nonempty(&reply.next_page_token);
        }
        if one_page || reply.next_page_token.is_empty() {
            return Ok(listed);
        }
        page_token = reply.next_page_token;
    }
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
