//! The listings that come in pages (`events`, `audit`): by default ctl follows the decider's
//! page tokens and prints everything; `--page-size` or `--page-token` asks for one page,
//! and its answer then names the token of the next.

use clap::Args;

use super::output::nonempty;

#[derive(Args, Clone, Debug, Default)]
pub struct PageArgs {
    /// Entries per request (the decider's default: 1,000; at most 10,000). Prints only one
    /// page of this size, and the token of the next.
    #[arg(long)]
    page_size: Option<u32>,
    /// Prints only the page this token starts (a token an earlier page printed).
    #[arg(long)]
    page_token: Option<String>,
}

/// Where a listing stands: the next request to make, until the last page or the one page
/// asked for has been read.
pub struct Pager {
    page_size: u32,
    one_page: bool,
    /// The next request's token; `None` once nothing more is to be read.
    next: Option<String>,
    /// The token of the page after the one page asked for, if any.
    left: Option<String>,
}

impl Pager {
    pub fn new(args: PageArgs) -> Self {
        Pager {
            page_size: args.page_size.unwrap_or(0),
            one_page: args.page_size.is_some() || args.page_token.is_some(),
            next: Some(args.page_token.unwrap_or_default()),
            left: None,
        }
    }

    /// The page size and token of the next request, or `None` when the listing is read.
    pub fn next_request(&mut self) -> Option<(u32, String)> {
        self.next.take().map(|token| (self.page_size, token))
    }

    /// Takes an answer's `next_page_token` ("" on the last page).
    pub fn answered(&mut self, next_page_token: String) {
        if self.one_page {
            self.left = nonempty(&next_page_token);
        } else if !next_page_token.is_empty() {
            self.next = Some(next_page_token);
        }
    }

    /// The token of the page after the one page asked for: what the answer prints.
    pub fn next_page_token(self) -> Option<String> {
        self.left
    }
}
