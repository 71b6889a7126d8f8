//! Pages of a listing that grows with a tenant (its servers, its events): a bounded slice
//! of the keys under one prefix, read straight from RocksDB, so that no reader ever holds a
//! whole tenant in memory. A page starts at the first key, just after the last key of the
//! page before, or (read backwards) just before the first key of the page after; where it
//! starts is a key suffix, which the decider wraps in an opaque page token.

use crate::codec::Codec;
use crate::rocks::{decode, Store, StoreError};

/// Where a page starts. Keys are the suffixes after the listing's prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageStart {
    First,
    /// Strictly after this key: the next page.
    After(Vec<u8>),
    /// Strictly before this key, read backwards: the previous page.
    Before(Vec<u8>),
}

/// Up to a page's worth of values, in key order, each with its key suffix.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<(Vec<u8>, T)>,
    /// Whether values lie before the first item (a page started `First` has none).
    pub has_previous: bool,
    /// Whether values lie after the last item.
    pub has_next: bool,
}

impl Store {
    /// The page of values under `prefix` that `keep` accepts, `limit` at most, from `start`.
    pub fn page<T: Codec>(
        &self,
        family: &str,
        prefix: &[u8],
        start: &PageStart,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, StoreError> {
        let full = |suffix: &[u8]| [prefix, suffix].concat();
        let mut iter = self.db().raw_iterator_cf(self.cf(family));
        let backwards = matches!(start, PageStart::Before(_));
        match start {
            PageStart::First => iter.seek(prefix),
            PageStart::After(after) => {
                let key = full(after);
                iter.seek(&key);
                if iter.key() == Some(key.as_slice()) {
                    iter.next();
                }
            }
            PageStart::Before(before) => {
                let key = full(before);
                iter.seek_for_prev(&key);
                if iter.key() == Some(key.as_slice()) {
                    iter.prev();
                }
            }
        }
        let mut items = Vec::new();
        let mut more = false;
        while let (Some(key), Some(bytes)) = (iter.key(), iter.value()) {
            if !key.starts_with(prefix) {
                break;
            }
            let value: T = decode(key, bytes)?;
            if keep(&value) {
                if items.len() == limit {
                    more = true;
                    break;
                }
                items.push((key[prefix.len()..].to_vec(), value));
            }
            if backwards {
                iter.prev();
            } else {
                iter.next();
            }
        }
        iter.status()?;
        if backwards {
            items.reverse();
            return Ok(Page {
                items,
                has_previous: more,
                has_next: true,
            });
        }
        Ok(Page {
            items,
            has_previous: *start != PageStart::First,
            has_next: more,
        })
    }

    /// Calls `each` with every value under `prefix`, in key order, holding one at a time.
    pub fn for_each_with_prefix<T: Codec>(&self, family: &str, prefix: &[u8], mut each: impl FnMut(&[u8], T)) -> Result<(), StoreError> {
        for item in self.db().prefix_iterator_cf(self.cf(family), prefix) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            each(&key, decode(&key, &value)?);
        }
        Ok(())
    }
}
