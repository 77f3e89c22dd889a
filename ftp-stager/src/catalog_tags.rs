//! Tags naming the catalog this stager serves (`stager.catalog`'s `tag`), so a web frontend
//! that already holds the current catalog is answered `unchanged` instead of being sent every
//! release again on each page view (its `if_not`).
//!
//! A catalog is the list of release manifests the repository's shared cache hands out; the
//! cache gives the same `Arc` for a manifest whose file did not change, so the same
//! manifests in the same order are the same catalog. A tag is this start's random prefix and
//! a counter: a restarted stager never repeats an earlier tag.

use std::sync::{Arc, Mutex};

use crate::repository::Manifest;

/// The current tag of each of the two catalogs (with and without yanked releases).
#[derive(Debug)]
pub struct CatalogTags {
    boot: String,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Tags handed out so far.
    count: u64,
    /// By `include_yanked`: the manifests of the catalog last tagged, and its tag.
    last: [Option<(Vec<Arc<Manifest>>, String)>; 2],
}

impl Default for CatalogTags {
    fn default() -> Self {
        Self::new()
    }
}

impl CatalogTags {
    /// Tags for a stager starting now.
    pub fn new() -> CatalogTags {
        CatalogTags {
            boot: crate::fsutil::random_hex(6),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The tag of the catalog made of `manifests` (with yanked releases or not): the one
    /// given before while they are the same manifests in the same order, a new one as soon
    /// as any differs.
    pub fn tag(&self, include_yanked: bool, manifests: &[Arc<Manifest>]) -> String {
        // Every update is complete under the lock: a panicked holder leaves it consistent.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        let slot = &mut inner.last[usize::from(include_yanked)];
        if let Some((held, tag)) = slot
            && held.len() == manifests.len()
            && held.iter().zip(manifests).all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return tag.clone();
        }
        inner.count += 1;
        let tag = format!("{}-{}", self.boot, inner.count);
        *slot = Some((manifests.to_vec(), tag.clone()));
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(version: &str) -> Arc<Manifest> {
        Arc::new(Manifest {
            product: "tool".into(),
            version: version.into(),
            notes: String::new(),
            published_at: chrono::Utc::now(),
            published_by: String::new(),
            yanked: false,
            yanked_at: None,
            quarantined: None,
            files: Vec::new(),
            signature: None,
        })
    }

    #[test]
    fn the_same_manifests_keep_their_tag_and_any_change_makes_a_new_one() {
        let tags = CatalogTags::new();
        let (a, b) = (manifest("1.0"), manifest("2.0"));
        let first = tags.tag(false, &[a.clone(), b.clone()]);
        assert_eq!(tags.tag(false, &[a.clone(), b.clone()]), first);
        // The other catalog (with yanked releases) is tagged on its own.
        let with_yanked = tags.tag(true, &[a.clone(), b.clone()]);
        assert_ne!(with_yanked, first);
        assert_eq!(tags.tag(false, &[a.clone(), b.clone()]), first);
        // A manifest read again (equal content, another Arc), one gone, another order.
        let b2 = manifest("2.0");
        for changed in [
            vec![a.clone(), b2],
            vec![a.clone()],
            vec![b.clone(), a.clone()],
        ] {
            assert_ne!(tags.tag(false, &changed), first, "{changed:?}");
        }
        // Another start never repeats a tag.
        assert_ne!(CatalogTags::new().tag(false, &[a, b]), first);
    }
}
