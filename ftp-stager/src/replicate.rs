//! Replication: one repository, many stagers. A follower stager pulls every release of a
//! source stager over the source's HTTPS listener, by hash, so each stager keeps a full copy
//! of the content-addressed repository on its own disk (staging stays a hard link there).
//!
//! ```text
//! GET /replicate/v1/releases      200 {"digest": "…", "releases": [manifest…], "keys": {…}}
//!                                 304 with If-None-Match: "<digest>" when nothing changed
//! GET /replicate/v1/objects/SHA   200 the object's bytes (Range honoured)   404 absent
//! GET /replicate/v1/stats         200 {"listings_served": n, "objects_served": n, …,
//!                                      "following": {…} on a follower}
//! ```
//! Every request carries `Authorization: Bearer ffsrt_…`, a replication token
//! ([`crate::tokens::TokenStore::replication`], `ffs replication-token create`); a publish
//! token is refused, and the other way round. The listing holds every manifest (published,
//! yanked and quarantined) and the public keys that signed them; its digest is the SHA-256
//! of the listing's canonical JSON, so an unchanged source answers 304 and costs nothing.
//!
//! The follower ([`crate::replicate_follow`], `[stager] replicate_from`) polls the listing
//! and [`plan`]s: a release it lacks is *added* (each missing object fetched into
//! `repository/tmp/` while hashing, refused and discarded unless size and SHA-256 match,
//! made read-only and renamed into `objects/`, then the manifest written last and
//! atomically: a stager never offers a release it does not fully hold); a release yanked or
//! quarantined at the source is *withdrawn* here too; a release the follower quarantined
//! itself (its own disk altered it) while the source's copy is intact is *repaired*
//! (fetched again). An object already present is never fetched again (dedup), and a
//! follower that was down simply catches up on its next poll. Two stagers holding
//! different content under one release name is a *conflict*: logged, never overwritten.
//!
//! This module is the vocabulary and the pure planning; `replicate_serve` answers the
//! requests, `replicate_follow` runs the follower.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::repository::Manifest;

/// What `GET /replicate/v1/releases` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// SHA-256 of `releases` and `keys` as canonical JSON (see [`digest`]).
    pub digest: String,
    /// Every manifest of the source, yanked and quarantined ones included.
    pub releases: Vec<Manifest>,
    /// The `.pub` text of each key that signed a listed release, by key id.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

impl Listing {
    /// A listing of `releases` and `keys` with its digest.
    pub fn new(releases: Vec<Manifest>, keys: BTreeMap<String, String>) -> Listing {
        let digest = digest(&releases, &keys);
        Listing {
            digest,
            releases,
            keys,
        }
    }
}

/// The listing's change marker: SHA-256 of the canonical JSON of releases and keys (the
/// order [`crate::Repository::catalog`] returns is stable), so it changes exactly when a
/// release is added, yanked or quarantined, and needs no state to survive a restart.
pub fn digest(releases: &[Manifest], keys: &BTreeMap<String, String>) -> String {
    let bytes = serde_json::to_vec(&(releases, keys)).unwrap_or_default();
    crate::fsutil::sha256_hex(&bytes)
}

/// What a follower does about one release of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Not held here: fetch the missing objects, then write this manifest.
    Add(Manifest),
    /// Held here, yanked or quarantined at the source: record the source's state.
    Withdraw(Manifest),
    /// Quarantined here (the follower's copy was altered) but intact at the source: fetch
    /// the objects again and write the source's manifest.
    Repair(Manifest),
    /// Same name, different files or signature here: never overwritten, only logged.
    Conflict(Manifest),
}

impl Action {
    /// The source manifest the action is about.
    pub fn manifest(&self) -> &Manifest {
        match self {
            Action::Add(m) | Action::Withdraw(m) | Action::Repair(m) | Action::Conflict(m) => m,
        }
    }
}

/// Whether two manifests describe the same content (files and signature).
fn same_content(a: &Manifest, b: &Manifest) -> bool {
    a.files == b.files && a.signature == b.signature
}

/// What a follower holding `local` must do to match `source`. Releases only the follower
/// has are left alone; a release yanked at the source that the follower never held is not
/// fetched (nobody may stage it); a release the follower yanked itself stays yanked.
pub fn plan(local: &[Manifest], source: &[Manifest]) -> Vec<Action> {
    let held: HashMap<(&str, &str), &Manifest> = local
        .iter()
        .map(|m| ((m.product.as_str(), m.version.as_str()), m))
        .collect();
    let mut out = Vec::new();
    for m in source {
        match held.get(&(m.product.as_str(), m.version.as_str())) {
            None if !m.yanked => out.push(Action::Add(m.clone())),
            None => {}
            Some(l) if !same_content(l, m) => out.push(Action::Conflict(m.clone())),
            Some(l) if m.yanked && !l.yanked => out.push(Action::Withdraw(m.clone())),
            Some(l) if !m.yanked && l.quarantined.is_some() => {
                out.push(Action::Repair(m.clone()));
            }
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::ManifestFile;

    fn m(version: &str, sha: char) -> Manifest {
        Manifest {
            product: "tool".into(),
            version: version.into(),
            notes: String::new(),
            published_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            published_by: String::new(),
            yanked: false,
            yanked_at: None,
            quarantined: None,
            files: vec![ManifestFile {
                name: "a.bin".into(),
                size: 1,
                sha256: std::iter::repeat_n(sha, 64).collect(),
            }],
            signature: None,
        }
    }

    fn yanked(mut x: Manifest) -> Manifest {
        x.yanked = true;
        x
    }

    #[test]
    fn plans_adds_withdrawals_repairs_and_conflicts() {
        let mut quarantined = yanked(m("4", 'd'));
        quarantined.quarantined = Some("a.bin altered".into());
        let local = vec![
            m("1", 'a'),
            m("2", 'b'),
            quarantined,
            m("5", 'e'),
            yanked(m("7", 'f')),
            m("only-here", '0'),
        ];
        let source = vec![
            m("1", 'a'),
            yanked(m("2", 'b')),
            m("3", 'c'),
            m("4", 'd'),
            m("5", '9'),
            yanked(m("6", 'f')),
            m("7", 'f'),
        ];
        assert_eq!(
            plan(&local, &source),
            vec![
                Action::Withdraw(yanked(m("2", 'b'))),
                Action::Add(m("3", 'c')),
                Action::Repair(m("4", 'd')),
                Action::Conflict(m("5", '9')),
            ]
        );
        assert!(plan(&source, &source).is_empty(), "in step: nothing to do");
    }

    #[test]
    fn digest_changes_with_state_only() {
        let keys = BTreeMap::new();
        let a = Listing::new(vec![m("1", 'a')], keys.clone());
        assert_eq!(a, Listing::new(vec![m("1", 'a')], keys.clone()));
        assert_ne!(
            a.digest,
            Listing::new(vec![yanked(m("1", 'a'))], keys).digest
        );
        let parsed: Listing = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(parsed, a);
    }
}
