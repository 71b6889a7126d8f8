//! MAIL FROM (RFC 5321 4.1.1.2): opens a transaction.
//!
//! Only the parameters the edge advertises are accepted (BODY=7BIT/8BITMIME and SIZE,
//! RFC 1870/6152); anything else gets 555 as RFC 5321 4.1.1.11 asks. A declared SIZE over
//! the limit is refused here, before any content is sent. A throttle or block verdict the
//! session still remembers answers MAIL at once. With `require_tls`, MAIL before STARTTLS
//! is refused with `530 5.7.0` (RFC 3207 4).

use smtp_proto::{
    MailFrom, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Address, Flow, Session, Transaction};
use crate::reply;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn mail(&mut self, from: MailFrom<Address<'_>>) -> Flow {
        if self.greeting.is_none() {
            return self.error(reply::bad_sequence("send HELO/EHLO first")).await;
        }
        if self.shared.config.require_tls && self.tls.is_none() {
            return self.error(reply::tls_required()).await;
        }
        if self.transaction.is_some() {
            return self.error(reply::bad_sequence("nested MAIL command")).await;
        }
        if let Some(param) = unsupported(&from) {
            return self.error(reply::unsupported_parameter(param)).await;
        }
        if from.size > self.shared.config.max_message_size {
            return self.reply(reply::message_too_big()).await;
        }
        if let Some(remembered) = self.remembered_now() {
            return self.reply(remembered).await;
        }
        self.transaction = Some(Transaction {
            from: from.address.into_owned(),
            eight_bit: from.flags & MAIL_BODY_8BITMIME != 0,
            recipients: Vec::new(),
        });
        self.reply(reply::ok("2.1.0")).await
    }

    /// The remembered throttle/block reply, while its window lasts, counted as given.
    fn remembered_now(&mut self) -> Option<reply::Reply> {
        if !self.shared.config.remember_verdict {
            return None;
        }
        let now = chrono::Utc::now().timestamp_millis();
        match &self.remembered {
            Some(r) if now < r.valid_until_unix_ms => {
                // A message refused at MAIL is a message given that verdict: counted too.
                if let Some(counted) = &r.counted {
                    self.shared.counts.record(counted);
                }
                Some(r.reply.clone())
            }
            Some(_) => {
                self.remembered = None;
                None
            }
            None => None,
        }
    }
}

fn unsupported(from: &MailFrom<Address<'_>>) -> Option<&'static str> {
    let flags = from.flags & !(MAIL_BODY_7BIT | MAIL_BODY_8BITMIME);
    if flags & MAIL_BODY_BINARYMIME != 0 {
        Some("BODY=BINARYMIME")
    } else if flags & MAIL_SMTPUTF8 != 0 {
        Some("SMTPUTF8")
    } else if flags & (MAIL_RET_FULL | MAIL_RET_HDRS) != 0 {
        Some("RET")
    } else if flags & MAIL_REQUIRETLS != 0 {
        Some("REQUIRETLS")
    } else if from.env_id.is_some() {
        Some("ENVID")
    } else if from.auth.is_some() {
        Some("AUTH")
    } else if flags != 0
        || from.trans_id.is_some()
        || from.solicit.is_some()
        || from.mtrk.is_some()
        || from.by != 0
        || from.hold_for != 0
        || from.hold_until != 0
        || from.mt_priority != 0
    {
        Some("parameter not advertised")
    } else {
        None
    }
}
