//! Pure functions from back-end data to page views: the entitlement ∩ catalog intersection,
//! the download recipe. No I/O, so the rules are unit-tested directly.

use std::collections::BTreeMap;

use crate::backend::{EntitlementInfo, HistoryEntry, ReleaseInfo, StagedArea};
use crate::format;
use crate::pages::{
    FileView, HistoryView, KeysView, LinkView, ProductView, ReleaseView, SignatureView,
};
use crate::signing::SigningKeys;
use crate::version;

/// Whether an entitlement's expiry (RFC 3339 or `YYYY-MM-DD`) has passed at `now`.
pub fn expired(until: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> bool {
    let Some(u) = until.map(str::trim).filter(|u| !u.is_empty()) else {
        return false;
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(u) {
        return t < now;
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(u, "%Y-%m-%d") {
        return d < now.date_naive();
    }
    // Unknown format: fail closed for display (the agent decides at prepare time anyway).
    true
}

/// Whether any live entitlement covers this release.
pub fn entitled(
    ents: &[EntitlementInfo],
    product: &str,
    version: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    ents.iter().any(|e| {
        e.product == product
            && !expired(e.expires_at.as_deref(), now)
            && version::matches(&e.versions, version)
    })
}

/// The products page: each entitled product with the published (not yanked) releases its
/// entitlements cover, newest first. Products with no live entitlement are absent.
pub fn products(
    ents: &[EntitlementInfo],
    catalog: &[ReleaseInfo],
    keys: &SigningKeys,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<ProductView> {
    let mut by_product: BTreeMap<&str, Vec<&EntitlementInfo>> = BTreeMap::new();
    for e in ents
        .iter()
        .filter(|e| !e.expired && !expired(e.expires_at.as_deref(), now))
    {
        by_product.entry(e.product.as_str()).or_default().push(e);
    }
    by_product
        .into_iter()
        .map(|(name, es)| {
            let mut releases: Vec<&ReleaseInfo> = catalog
                .iter()
                .filter(|r| {
                    r.product == name
                        && !r.yanked
                        && es.iter().any(|e| version::matches(&e.versions, &r.version))
                })
                .collect();
            releases.sort_by(|a, b| version::compare(&b.version, &a.version));
            let versions = es
                .iter()
                .map(|e| {
                    if e.versions.trim().is_empty() {
                        "any".to_string()
                    } else {
                        e.versions.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" or ");
            let until = es
                .iter()
                .map(|e| e.expires_at.clone())
                .collect::<Option<Vec<String>>>()
                .and_then(|v| v.into_iter().max())
                .map(|u| format::time(&u));
            ProductView {
                name: name.to_string(),
                versions,
                until,
                releases: releases
                    .into_iter()
                    .map(|r| release_view(r, keys))
                    .collect(),
            }
        })
        .collect()
}

/// A release's signature state: the key id (empty = unsigned) and, when this site lists
/// that key, where it serves it.
pub fn signature(signed_by: &str, keys: &SigningKeys) -> SignatureView {
    SignatureView {
        key_id: signed_by.to_owned(),
        key_url: keys.get(signed_by).map(|k| k.url()),
    }
}

/// The keys card: the current key, its text and link, and the older keys.
pub fn keys_view(keys: &SigningKeys) -> Option<KeysView> {
    let current = keys.current()?;
    Some(KeysView {
        key_id: current.key_id.clone(),
        key_text: current.text.clone(),
        key_url: current.url(),
        older: keys
            .all()
            .iter()
            .skip(1)
            .map(|k| (k.key_id.clone(), k.url()))
            .collect(),
    })
}

fn release_view(r: &ReleaseInfo, keys: &SigningKeys) -> ReleaseView {
    let total: u64 = r.files.iter().map(|f| f.size).sum();
    ReleaseView {
        signature: signature(&r.signed_by, keys),
        product: r.product.clone(),
        version: r.version.clone(),
        notes: r.notes.clone(),
        published: format::time(&r.published_at),
        total: format::size(total),
        anchor: format!(
            "r-{}-{}",
            format::url_segment(&r.product),
            format::url_segment(&r.version)
        )
        .replace('%', "_"),
        files: r
            .files
            .iter()
            .map(|f| FileView {
                name: f.name.clone(),
                size: format::size(f.size),
                bytes: f.size,
                sha256: f.sha256.clone(),
            })
            .collect(),
    }
}

/// The HTTPS URL of one staged file.
pub fn file_url(https_base: &str, name: &str) -> String {
    let base = https_base.trim_end_matches('/');
    format!("{base}/{}", format::url_path(name))
}

/// The links of a staged area.
pub fn links(area: &StagedArea) -> Vec<LinkView> {
    area.files
        .iter()
        .map(|f| LinkView {
            name: f.name.clone(),
            url: file_url(&area.https_base, &f.name),
            size: format::size(f.size),
            sha256: f.sha256.clone(),
        })
        .collect()
}

/// A copy-paste shell recipe: fetch every file with curl (resumable) and check SHA-256.
/// For a signed release whose key this site serves at `key_url` (absolute), the check is
/// the signature's: fetch the key from this site, `minisign -Vm SHA256SUMS -p ffs.pub`, then
/// `sha256sum -c SHA256SUMS` (`--ignore-missing` when only some files were prepared).
pub fn recipe(
    product: &str,
    version: &str,
    area: &StagedArea,
    key_url: Option<&str>,
    subset: bool,
) -> String {
    let dir = format!("{product}-{version}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect::<String>();
    let mut s = format!(
        "# {product} {version}; links expire {}\n# (for a self-signed test certificate add -k to curl)\nmkdir -p {q} && cd {q}\n",
        format::time(&area.expires_at),
        q = format::shell_quote(&dir)
    );
    for f in &area.files {
        s.push_str(&format!(
            "curl -fSL --create-dirs -C - -o {} {}\n",
            format::shell_quote(&f.name),
            format::shell_quote(&file_url(&area.https_base, &f.name))
        ));
    }
    if let Some(url) = key_url.filter(|_| !area.signed_by.is_empty()) {
        s.push_str(&format!(
            "# the vendor's public key (key id {}), from this site rather than the file server\n",
            area.signed_by
        ));
        s.push_str(&format!(
            "curl -fSL -o ffs.pub {}\n",
            format::shell_quote(url)
        ));
        s.push_str("minisign -Vm SHA256SUMS -p ffs.pub\n");
        s.push_str(if subset {
            "sha256sum -c --ignore-missing SHA256SUMS\n"
        } else {
            "sha256sum -c SHA256SUMS\n"
        });
        return s;
    }
    s.push_str("sha256sum -c <<'SUMS'\n");
    for f in &area.files {
        s.push_str(&format!("{}  {}\n", f.sha256, f.name));
    }
    s.push_str("SUMS\n");
    s
}

/// A history row for display.
pub fn history_row(h: &HistoryEntry, can_prepare: bool) -> HistoryView {
    HistoryView {
        id: h.id.to_string(),
        login: h.login.clone(),
        product: h.product.clone(),
        version: h.version.clone(),
        files: h.files.join(", "),
        at: format::time(&h.staged_at),
        client_addr: h.client_addr.clone(),
        delivered: if h.deliveries == 0 {
            "—".to_string()
        } else {
            format::size(h.delivered_bytes)
        },
        can_prepare,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commlink::msg::stager::FileInfo;

    fn rel(p: &str, v: &str, yanked: bool) -> ReleaseInfo {
        ReleaseInfo {
            product: p.into(),
            version: v.into(),
            notes: String::new(),
            published_at: "2026-11-01T00:00:00Z".into(),
            yanked,
            signed_by: String::new(),
            published_by: String::new(),
            quarantined: String::new(),
            files: vec![FileInfo {
                name: "a.bin".into(),
                size: 10,
                sha256: "00".repeat(32),
            }],
        }
    }

    fn ent(p: &str, v: &str, until: Option<&str>) -> EntitlementInfo {
        EntitlementInfo {
            product: p.into(),
            versions: v.into(),
            expires_at: until.map(Into::into),
            expired: false,
        }
    }

    #[test]
    fn intersection_filters_product_version_yank_and_expiry() {
        let now = chrono::Utc::now();
        let catalog = vec![
            rel("alpha", "1.0", false),
            rel("alpha", "2.0", false),
            rel("alpha", "2.10", false),
            rel("alpha", "2.5", true),
            rel("alpha", "3.0", false),
            rel("beta", "1.0", false),
            rel("gamma", "1.0", false),
        ];
        let ents = vec![
            ent("alpha", ">=2.0, <3", None),
            ent("gamma", "*", Some("2000-01-01")),
            ent("delta", "*", None),
        ];
        let p = products(&ents, &catalog, &SigningKeys::default(), now);
        let names: Vec<_> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["alpha", "delta"],
            "beta not entitled, gamma expired"
        );
        let versions: Vec<_> = p[0].releases.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(
            versions,
            ["2.10", "2.0"],
            "newest first, yanked and out-of-range hidden"
        );
        assert!(p[1].releases.is_empty());
        assert!(entitled(&ents, "alpha", "2.5", now));
        assert!(!entitled(&ents, "beta", "1.0", now));
        assert!(!entitled(&ents, "gamma", "1.0", now));
    }

    #[test]
    fn recipe_quotes_and_checks() {
        let area = StagedArea {
            area_id: "a1".into(),
            ftp_user: "u".into(),
            ftp_password: "p".into(),
            token: "t".into(),
            ftp_url: "ftp://u:p@h:21/".into(),
            https_base: "https://h:8444/d/t/".into(),
            expires_at: "2026-11-24T00:00:00Z".into(),
            signed_by: String::new(),
            files: vec![FileInfo {
                name: "dir/it's here.iso".into(),
                size: 5,
                sha256: "ab".repeat(32),
            }],
        };
        let r = recipe("prod", "1.0", &area, None, false);
        assert!(
            r.contains("-o 'dir/it'\\''s here.iso' 'https://h:8444/d/t/dir/it%27s%20here.iso'"),
            "{r}"
        );
        assert!(r.contains(&format!("{}  dir/it's here.iso", "ab".repeat(32))));
        assert_eq!(
            links(&area)[0].url,
            "https://h:8444/d/t/dir/it%27s%20here.iso"
        );

        // Signed: the key comes from this site, minisign checks the sums, then sha256sum.
        let signed = StagedArea {
            signed_by: "5EB8008AE09B91F5".into(),
            ..area
        };
        let url = "https://web.example/keys/5EB8008AE09B91F5.pub";
        let r = recipe("prod", "1.0", &signed, Some(url), false);
        assert!(
            r.ends_with(&format!(
                "curl -fSL -o ffs.pub '{url}'\nminisign -Vm SHA256SUMS -p ffs.pub\nsha256sum -c SHA256SUMS\n"
            )),
            "{r}"
        );
        assert!(!r.contains("<<'SUMS'"), "{r}");
        let r = recipe("prod", "1.0", &signed, Some(url), true);
        assert!(
            r.ends_with("sha256sum -c --ignore-missing SHA256SUMS\n"),
            "{r}"
        );
        // A key this site does not list: fall back to the sums shown on the page.
        let r = recipe("prod", "1.0", &signed, None, false);
        assert!(r.contains("<<'SUMS'"), "{r}");
    }

    #[test]
    fn releases_show_their_signing_key_and_unsigned_ones_say_so() {
        let pk = "untrusted comment: minisign public key 5EB8008AE09B91F5\nRWT1kZvgigC4XthiyKj7gVoxYq+O3hi8kpwVldkOCPWDB4ATNbE3U700\n";
        let keys = SigningKeys::new(vec![crate::signing::SigningKey::parse(pk).unwrap()]);
        let mut signed = rel("alpha", "2.0", false);
        signed.signed_by = "5EB8008AE09B91F5".into();
        let mut foreign = rel("alpha", "3.0", false);
        foreign.signed_by = "0000000000000001".into();
        let catalog = vec![rel("alpha", "1.0", false), signed, foreign];
        let p = products(
            &[ent("alpha", "*", None)],
            &catalog,
            &keys,
            chrono::Utc::now(),
        );
        let sig: Vec<(&str, &str, Option<&str>)> = p[0]
            .releases
            .iter()
            .map(|r| {
                (
                    r.version.as_str(),
                    r.signature.key_id.as_str(),
                    r.signature.key_url.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            sig,
            [
                ("3.0", "0000000000000001", None),
                (
                    "2.0",
                    "5EB8008AE09B91F5",
                    Some("/keys/5EB8008AE09B91F5.pub")
                ),
                ("1.0", "", None),
            ]
        );
        let k = keys_view(&keys).unwrap();
        assert_eq!(k.key_id, "5EB8008AE09B91F5");
        assert_eq!(k.key_text, pk);
        assert!(keys_view(&SigningKeys::default()).is_none());
    }
}
