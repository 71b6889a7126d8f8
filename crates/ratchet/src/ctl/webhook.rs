//! `ratchet ctl webhook --tenant T --url U`: where a tenant's notifications are POSTed, and
//! the signing secret drawn for it (shown once); an empty URL stops them.

use ratchet_proto::v1 as pb;
use serde::Serialize;

use super::client::refusal;
use super::output::{nonempty, Output};
use super::Admin;

#[derive(Serialize)]
pub struct Webhook {
    tenant: String,
    webhook_url: Option<String>,
    secret: Option<String>,
}

pub async fn run(admin: &mut Admin, tenant: String, url: String) -> anyhow::Result<Webhook> {
    let request = pb::SetWebhookRequest {
        tenant: tenant.clone(),
        url: url.clone(),
    };
    let reply = admin.set_webhook(request).await.map_err(refusal)?.into_inner();
    Ok(Webhook {
        tenant,
        webhook_url: nonempty(&url),
        secret: nonempty(&reply.secret),
    })
}

impl Output for Webhook {
    fn human(&self) {
        let tenant = &self.tenant;
        let Some(url) = &self.webhook_url else {
            println!("tenant {tenant}: notifications are no longer delivered");
            return;
        };
        println!("tenant {tenant}: notifications go to {url}");
        println!(
            "signing secret (HMAC-SHA256 of the body, header x-ratchet-signature: sha256=HEX): {}",
            self.secret.as_deref().unwrap_or_default()
        );
        println!("it is shown once; setting the webhook again draws a new one");
    }
}
