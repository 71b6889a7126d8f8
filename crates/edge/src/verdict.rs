//! From a message's build stamp to a Decide request, and from the decider's answer to what
//! a front does with the message. The edge and the milter both go through here, so that the
//! same message gets the same verdict and the same reply text from either.

use std::net::IpAddr;

use ratchet_proto::v1::{ConnectionFacts, DecideRequest, DecideResponse, Verdict};

use crate::build::BuildStamp;
use crate::metrics::MessageVerdict;
use crate::reply::{self, Reply};

/// The Decide request for a message stamped `stamp`, from `client_ip` (with the verified
/// client certificate's name, if any).
pub fn request(client_ip: IpAddr, cert_name: Option<&str>, stamp: &BuildStamp, linearizable: bool) -> DecideRequest {
    DecideRequest {
        connection: Some(ConnectionFacts {
            client_ip: client_ip.to_string(),
            tls_client_cert_name: cert_name.unwrap_or_default().to_string(),
        }),
        server_fqdn: stamp.server_fqdn.clone(),
        build: stamp.build.clone(),
        linearizable,
    }
}

/// What a decider's answer means for the message. Only the verdict counts: in report-only
/// mode it is accept, whatever `would_verdict` says (that is for counting only).
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// Throttle or block, with the reply to give: the decider's line verbatim, or the
    /// generic one of its class when that line is not a reply of the right class.
    Refuse {
        verdict: MessageVerdict,
        reply: Reply,
    },
    /// An answer without a verdict: as good as none.
    NoVerdict,
}

pub fn answer(response: &DecideResponse) -> Answer {
    let (verdict, fallback) = match Verdict::try_from(response.verdict) {
        Ok(Verdict::Accept) => return Answer::Accept,
        Ok(Verdict::Throttle) => (MessageVerdict::Throttle, reply::fallback_throttle()),
        Ok(Verdict::Block) => (MessageVerdict::Block, reply::fallback_block()),
        _ => {
            tracing::warn!(verdict = response.verdict, "decider answered without a verdict");
            return Answer::NoVerdict;
        }
    };
    let reply = Reply::parse_line(&response.reply)
        .filter(|r| r.code / 100 == fallback.code / 100)
        .unwrap_or_else(|| {
            tracing::warn!(reply = %response.reply, "decider reply line unusable; using the generic one");
            fallback
        });
    Answer::Refuse { verdict, reply }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(verdict: Verdict, reply: &str) -> DecideResponse {
        DecideResponse {
            verdict: verdict as i32,
            reply: reply.into(),
            ..Default::default()
        }
    }

    #[test]
    fn refusals_keep_the_deciders_line_unless_it_is_of_another_class() {
        let line = "450 4.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange.";
        assert_eq!(
            answer(&response(Verdict::Throttle, line)),
            Answer::Refuse {
                verdict: MessageVerdict::Throttle,
                reply: Reply::parse_line(line).unwrap()
            }
        );
        assert_eq!(
            answer(&response(Verdict::Block, line)),
            Answer::Refuse {
                verdict: MessageVerdict::Block,
                reply: reply::fallback_block()
            }
        );
        assert_eq!(answer(&response(Verdict::Accept, "")), Answer::Accept);
        let report_only = DecideResponse {
            would_verdict: Verdict::Block as i32,
            ..response(Verdict::Accept, "")
        };
        assert_eq!(answer(&report_only), Answer::Accept, "what would have been blocked is accepted");
        assert_eq!(answer(&response(Verdict::Unspecified, "")), Answer::NoVerdict);
    }
}
