//! Messages between the web frontend and the ftp-stager.
//!
//! Requests: [`CatalogRequest`] → [`Catalog`], [`StageRequest`] → [`StagedArea`],
//! [`UnstageRequest`] → [`Unstaged`], [`AreasRequest`] → [`AreaList`],
//! [`StatsRequest`] → [`Stats`], [`DeliveriesRequest`] → [`Deliveries`],
//! [`YankRequest`] → [`Yanked`].
//! Times are RFC 3339 text; sizes are bytes; checksums are lower-case hex SHA-256.

use crate::tobj::{Fields, Link, Message, Request, TobjError};

type Result<T> = std::result::Result<T, TobjError>;

/// The web frontend ⇄ ftp-stager link: every request in this module travels on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagerLink {}

impl Link for StagerLink {}

/// One file of a release or an area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Release-relative name, `/`-separated (e.g. `bin/tool.tar.gz`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

impl FileInfo {
    fn to_fields(&self) -> Fields {
        Fields::new()
            .text("name", &self.name)
            .num("size", self.size)
            .text("sha256", &self.sha256)
    }

    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(FileInfo {
            name: f.req_text("name")?.to_owned(),
            size: f.req_parse("size")?,
            sha256: f.req_text("sha256")?.to_owned(),
        })
    }
}

fn files_to(f: Fields, files: &[FileInfo]) -> Fields {
    f.list("files", "file", files.iter().map(FileInfo::to_fields))
}

fn files_from(f: &Fields) -> Result<Vec<FileInfo>> {
    f.list_items("files", "file")?
        .into_iter()
        .map(FileInfo::from_fields)
        .collect()
}

/// `stager.catalog`: every release in the repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogRequest {
    /// Include yanked releases (the admin view); customers never see them.
    pub include_yanked: bool,
    /// The [`Catalog::tag`] of the catalog the requester holds: when it is still the
    /// stager's (same releases, same manifests), the reply is `unchanged` and lists none.
    pub if_not: Option<String>,
}

impl Message for CatalogRequest {
    const TYPE: &'static str = "stager.catalog";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .flag("include_yanked", self.include_yanked)
            .opt_text("if_not", self.if_not.as_deref())
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(CatalogRequest {
            include_yanked: f.opt_str("include_yanked")? == Some("true"),
            if_not: f.opt_str("if_not")?.map(str::to_owned),
        })
    }
}

impl Request for CatalogRequest {
    type Response = Catalog;
    type Link = StagerLink;
}

/// One release of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInfo {
    /// Product name.
    pub product: String,
    /// Version string.
    pub version: String,
    /// Release notes (may be empty).
    pub notes: String,
    /// When it was published (RFC 3339).
    pub published_at: String,
    /// Whether it was withdrawn (`ffs yank`); a yanked release cannot be staged.
    pub yanked: bool,
    /// The id of the minisign key that signed its `SHA256SUMS` (16 upper-case hex digits);
    /// empty when the release is unsigned. Optional on the wire (absent = unsigned).
    pub signed_by: String,
    /// Who published it (e.g. `local user root`); may be empty. Optional on the wire.
    pub published_by: String,
    /// Why `ffs repo verify --quarantine` withdrew it (then also `yanked`); empty = not
    /// quarantined. Optional on the wire.
    pub quarantined: String,
    /// Its files (without `SHA256SUMS` and its signature, which every area of a signed
    /// release holds besides them).
    pub files: Vec<FileInfo>,
}

impl ReleaseInfo {
    fn to_fields(&self) -> Fields {
        files_to(
            Fields::new()
                .text("product", &self.product)
                .text("version", &self.version)
                .text("notes", &self.notes)
                .text("published_at", &self.published_at)
                .flag("yanked", self.yanked)
                .opt_text("signed_by", Some(&self.signed_by).filter(|s| !s.is_empty()))
                .opt_text(
                    "published_by",
                    Some(&self.published_by).filter(|s| !s.is_empty()),
                )
                .opt_text(
                    "quarantined",
                    Some(&self.quarantined).filter(|s| !s.is_empty()),
                ),
            &self.files,
        )
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(ReleaseInfo {
            product: f.req_text("product")?.to_owned(),
            version: f.req_text("version")?.to_owned(),
            notes: f.req_text("notes")?.to_owned(),
            published_at: f.req_text("published_at")?.to_owned(),
            yanked: f.req_flag("yanked")?,
            signed_by: f.opt_str("signed_by")?.unwrap_or_default().to_owned(),
            published_by: f.opt_str("published_by")?.unwrap_or_default().to_owned(),
            quarantined: f.opt_str("quarantined")?.unwrap_or_default().to_owned(),
            files: files_from(f)?,
        })
    }
}

/// Reply to [`CatalogRequest`]: releases sorted by product, newest release first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// The releases (none when `unchanged`).
    pub releases: Vec<ReleaseInfo>,
    /// Names this catalog (opaque; changes whenever the releases or their manifests do,
    /// and with every start of the stager). Absent from older stagers.
    pub tag: Option<String>,
    /// The requester's `if_not` is this catalog's tag: it holds the releases already.
    pub unchanged: bool,
}

impl Message for Catalog {
    const TYPE: &'static str = "stager.catalog.reply";
    fn to_fields(&self) -> Fields {
        let f = Fields::new()
            .list(
                "releases",
                "release",
                self.releases.iter().map(ReleaseInfo::to_fields),
            )
            .opt_text("tag", self.tag.as_deref());
        if self.unchanged {
            f.flag("unchanged", true)
        } else {
            f
        }
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Catalog {
            releases: f
                .list_items("releases", "release")?
                .into_iter()
                .map(ReleaseInfo::from_fields)
                .collect::<Result<_>>()?,
            tag: f.opt_str("tag")?.map(str::to_owned),
            unchanged: f.opt_str("unchanged")? == Some("true"),
        })
    }
}

/// `stager.stage`: make a download area for a release (or some of its files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageRequest {
    /// Product name.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release-relative file names; empty = the whole release.
    pub files: Vec<String>,
    /// Free text shown in the admin's area list (e.g. the customer's login).
    pub label: String,
    /// Lifetime in seconds; `None` = the stager's configured default.
    pub ttl_secs: Option<u64>,
}

impl Message for StageRequest {
    const TYPE: &'static str = "stager.stage";
    fn to_fields(&self) -> Fields {
        let f = Fields::new()
            .text("product", &self.product)
            .text("version", &self.version)
            .text_list("files", "file", self.files.iter().map(String::as_str))
            .text("label", &self.label);
        match self.ttl_secs {
            Some(t) => f.num("ttl_secs", t),
            None => f,
        }
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(StageRequest {
            product: f.req_text("product")?.to_owned(),
            version: f.req_text("version")?.to_owned(),
            files: f.text_items("files", "file")?,
            label: f.opt_str("label")?.unwrap_or_default().to_owned(),
            ttl_secs: f.opt_parse("ttl_secs")?,
        })
    }
}

impl Request for StageRequest {
    type Response = StagedArea;
    type Link = StagerLink;
}

/// Reply to [`StageRequest`]: the area and its one-time credentials (returned only here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedArea {
    /// The area's random id.
    pub area_id: String,
    /// One-time FTP user name.
    pub ftp_user: String,
    /// One-time FTP password.
    pub ftp_password: String,
    /// HTTPS capability token.
    pub token: String,
    /// `ftp://user:pass@host:port/`.
    pub ftp_url: String,
    /// `https://host:port/d/<token>/`; append a file name to download it.
    pub https_base: String,
    /// When the area (and its credentials) expire, RFC 3339.
    pub expires_at: String,
    /// The key id that signed the release's `SHA256SUMS` (then the area also holds
    /// `SHA256SUMS` and `SHA256SUMS.minisig`, listed in `files`); empty = unsigned.
    /// Optional on the wire.
    pub signed_by: String,
    /// The staged files.
    pub files: Vec<FileInfo>,
}

impl Message for StagedArea {
    const TYPE: &'static str = "stager.area";
    fn to_fields(&self) -> Fields {
        files_to(
            Fields::new()
                .text("area_id", &self.area_id)
                .text("ftp_user", &self.ftp_user)
                .text("ftp_password", &self.ftp_password)
                .text("token", &self.token)
                .text("ftp_url", &self.ftp_url)
                .text("https_base", &self.https_base)
                .text("expires_at", &self.expires_at)
                .opt_text("signed_by", Some(&self.signed_by).filter(|s| !s.is_empty())),
            &self.files,
        )
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(StagedArea {
            area_id: f.req_text("area_id")?.to_owned(),
            ftp_user: f.req_text("ftp_user")?.to_owned(),
            ftp_password: f.req_text("ftp_password")?.to_owned(),
            token: f.req_text("token")?.to_owned(),
            ftp_url: f.req_text("ftp_url")?.to_owned(),
            https_base: f.req_text("https_base")?.to_owned(),
            expires_at: f.req_text("expires_at")?.to_owned(),
            signed_by: f.opt_str("signed_by")?.unwrap_or_default().to_owned(),
            files: files_from(f)?,
        })
    }
}

/// `stager.unstage`: remove an area now (revoke its credentials and token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnstageRequest {
    /// The area to remove.
    pub area_id: String,
}

impl Message for UnstageRequest {
    const TYPE: &'static str = "stager.unstage";
    fn to_fields(&self) -> Fields {
        Fields::new().text("area_id", &self.area_id)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(UnstageRequest {
            area_id: f.req_text("area_id")?.to_owned(),
        })
    }
}

impl Request for UnstageRequest {
    type Response = Unstaged;
    type Link = StagerLink;
}

/// Reply to [`UnstageRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unstaged {
    /// The area id from the request.
    pub area_id: String,
    /// False if no such area existed (already expired or removed).
    pub removed: bool,
}

impl Message for Unstaged {
    const TYPE: &'static str = "stager.unstaged";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .text("area_id", &self.area_id)
            .flag("removed", self.removed)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Unstaged {
            area_id: f.req_text("area_id")?.to_owned(),
            removed: f.req_flag("removed")?,
        })
    }
}

/// `stager.yank`: withdraw a release (admin); it can no longer be staged, areas already
/// staged keep working until they expire. An unknown release is refused `not-found`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YankRequest {
    /// Product name.
    pub product: String,
    /// Version string.
    pub version: String,
}

impl Message for YankRequest {
    const TYPE: &'static str = "stager.yank";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .text("product", &self.product)
            .text("version", &self.version)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(YankRequest {
            product: f.req_text("product")?.to_owned(),
            version: f.req_text("version")?.to_owned(),
        })
    }
}

impl Request for YankRequest {
    type Response = Yanked;
    type Link = StagerLink;
}

/// Reply to [`YankRequest`]: the release is yanked now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Yanked {
    /// Product name from the request.
    pub product: String,
    /// Version string from the request.
    pub version: String,
    /// True if it was already yanked before this request (nothing changed).
    pub already: bool,
}

impl Message for Yanked {
    const TYPE: &'static str = "stager.yanked";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .text("product", &self.product)
            .text("version", &self.version)
            .flag("already", self.already)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Yanked {
            product: f.req_text("product")?.to_owned(),
            version: f.req_text("version")?.to_owned(),
            already: f.req_flag("already")?,
        })
    }
}

/// `stager.areas`: the live download areas (no secrets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AreasRequest {}

impl Message for AreasRequest {
    const TYPE: &'static str = "stager.areas";
    fn to_fields(&self) -> Fields {
        Fields::new()
    }
    fn from_fields(_f: &Fields) -> Result<Self> {
        Ok(AreasRequest {})
    }
}

impl Request for AreasRequest {
    type Response = AreaList;
    type Link = StagerLink;
}

/// One live area as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaSummary {
    /// The area id.
    pub area_id: String,
    /// The label given at staging.
    pub label: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Expiry time, RFC 3339.
    pub expires_at: String,
    /// Number of files.
    pub file_count: u64,
    /// Total bytes.
    pub bytes: u64,
}

impl AreaSummary {
    fn to_fields(&self) -> Fields {
        Fields::new()
            .text("area_id", &self.area_id)
            .text("label", &self.label)
            .text("product", &self.product)
            .text("version", &self.version)
            .text("created_at", &self.created_at)
            .text("expires_at", &self.expires_at)
            .num("file_count", self.file_count)
            .num("bytes", self.bytes)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(AreaSummary {
            area_id: f.req_text("area_id")?.to_owned(),
            label: f.req_text("label")?.to_owned(),
            product: f.req_text("product")?.to_owned(),
            version: f.req_text("version")?.to_owned(),
            created_at: f.req_text("created_at")?.to_owned(),
            expires_at: f.req_text("expires_at")?.to_owned(),
            file_count: f.req_parse("file_count")?,
            bytes: f.req_parse("bytes")?,
        })
    }
}

/// Reply to [`AreasRequest`], newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AreaList {
    /// The areas.
    pub areas: Vec<AreaSummary>,
}

impl Message for AreaList {
    const TYPE: &'static str = "stager.area_list";
    fn to_fields(&self) -> Fields {
        Fields::new().list(
            "areas",
            "area",
            self.areas.iter().map(AreaSummary::to_fields),
        )
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(AreaList {
            areas: f
                .list_items("areas", "area")?
                .into_iter()
                .map(AreaSummary::from_fields)
                .collect::<Result<_>>()?,
        })
    }
}

/// `stager.stats`: staging latency and area totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsRequest {}

impl Message for StatsRequest {
    const TYPE: &'static str = "stager.stats";
    fn to_fields(&self) -> Fields {
        Fields::new()
    }
    fn from_fields(_f: &Fields) -> Result<Self> {
        Ok(StatsRequest {})
    }
}

impl Request for StatsRequest {
    type Response = Stats;
    type Link = StagerLink;
}

/// Reply to [`StatsRequest`]. Latencies are whole-request stage times in microseconds,
/// over the stages since the stager started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Number of stage requests that succeeded since start.
    pub stage_count: u64,
    /// Median stage latency, µs.
    pub stage_p50_us: u64,
    /// 99th percentile stage latency, µs.
    pub stage_p99_us: u64,
    /// Worst stage latency, µs.
    pub stage_max_us: u64,
    /// How files are placed into areas: `hardlink`, `reflink` or `copy`.
    pub method: String,
    /// Live areas.
    pub areas: u64,
    /// Bytes staged in live areas (shared with the repository when hard-linked).
    pub area_bytes: u64,
    /// Completed deliveries recorded (all time).
    pub deliveries: u64,
    /// Bytes in those deliveries.
    pub delivered_bytes: u64,
}

impl Message for Stats {
    const TYPE: &'static str = "stager.stats.reply";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("stage_count", self.stage_count)
            .num("stage_p50_us", self.stage_p50_us)
            .num("stage_p99_us", self.stage_p99_us)
            .num("stage_max_us", self.stage_max_us)
            .text("method", &self.method)
            .num("areas", self.areas)
            .num("area_bytes", self.area_bytes)
            .num("deliveries", self.deliveries)
            .num("delivered_bytes", self.delivered_bytes)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Stats {
            stage_count: f.req_parse("stage_count")?,
            stage_p50_us: f.req_parse("stage_p50_us")?,
            stage_p99_us: f.req_parse("stage_p99_us")?,
            stage_max_us: f.req_parse("stage_max_us")?,
            method: f.req_text("method")?.to_owned(),
            areas: f.req_parse("areas")?,
            area_bytes: f.req_parse("area_bytes")?,
            deliveries: f.req_parse("deliveries")?,
            delivered_bytes: f.req_parse("delivered_bytes")?,
        })
    }
}

/// `stager.deliveries`: completed transfers with `seq > after_seq`, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveriesRequest {
    /// Return only deliveries after this sequence number (0 = from the start).
    pub after_seq: u64,
    /// At most this many (the stager caps it at 1000).
    pub limit: Option<u64>,
}

impl Message for DeliveriesRequest {
    const TYPE: &'static str = "stager.deliveries";
    fn to_fields(&self) -> Fields {
        let f = Fields::new().num("after_seq", self.after_seq);
        match self.limit {
            Some(l) => f.num("limit", l),
            None => f,
        }
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(DeliveriesRequest {
            after_seq: f.req_parse("after_seq")?,
            limit: f.opt_parse("limit")?,
        })
    }
}

impl Request for DeliveriesRequest {
    type Response = Deliveries;
    type Link = StagerLink;
}

/// One completed transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Monotonically increasing, never reused.
    pub seq: u64,
    /// The area it came from.
    pub area_id: String,
    /// The area's label.
    pub label: String,
    /// Release-relative file name.
    pub file: String,
    /// Bytes sent in this transfer (less than the size after a resume).
    pub bytes: u64,
    /// `ftp`, `ftps` or `https`.
    pub protocol: String,
    /// When it completed, RFC 3339.
    pub at: String,
}

impl Delivery {
    fn to_fields(&self) -> Fields {
        Fields::new()
            .num("seq", self.seq)
            .text("area_id", &self.area_id)
            .text("label", &self.label)
            .text("file", &self.file)
            .num("bytes", self.bytes)
            .text("protocol", &self.protocol)
            .text("at", &self.at)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Delivery {
            seq: f.req_parse("seq")?,
            area_id: f.req_text("area_id")?.to_owned(),
            label: f.req_text("label")?.to_owned(),
            file: f.req_text("file")?.to_owned(),
            bytes: f.req_parse("bytes")?,
            protocol: f.req_text("protocol")?.to_owned(),
            at: f.req_text("at")?.to_owned(),
        })
    }
}

/// Reply to [`DeliveriesRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deliveries {
    /// The deliveries, oldest first.
    pub deliveries: Vec<Delivery>,
    /// The newest seq the stager has recorded (poll again with this when the list is full).
    pub last_seq: u64,
}

impl Message for Deliveries {
    const TYPE: &'static str = "stager.deliveries.reply";
    fn to_fields(&self) -> Fields {
        Fields::new()
            .list(
                "deliveries",
                "delivery",
                self.deliveries.iter().map(Delivery::to_fields),
            )
            .num("last_seq", self.last_seq)
    }
    fn from_fields(f: &Fields) -> Result<Self> {
        Ok(Deliveries {
            deliveries: f
                .list_items("deliveries", "delivery")?
                .into_iter()
                .map(Delivery::from_fields)
                .collect::<Result<_>>()?,
            last_seq: f.req_parse("last_seq")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tobj::{Limits, Tobj};

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        let text = m.to_tobj(42).encode();
        let t = Tobj::parse(&text, &Limits::default()).unwrap();
        assert_eq!(t.kind, M::TYPE);
        assert_eq!(M::from_tobj(&t).unwrap(), m);
    }

    fn file(n: &str) -> FileInfo {
        FileInfo {
            name: n.into(),
            size: 1 << 33,
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn catalog_round_trips_signed_releases() {
        round_trip(Catalog {
            tag: None,
            unchanged: false,
            releases: vec![ReleaseInfo {
                product: "tool".into(),
                version: "2.0".into(),
                notes: String::new(),
                published_at: "2026-11-27T10:00:00Z".into(),
                yanked: false,
                signed_by: "0123456789ABCDEF".into(),
                published_by: "local user root".into(),
                quarantined: "2026-11-27 01:00 UTC: a.iso: content hashes to 00".into(),
                files: vec![file("a.iso")],
            }],
        });
    }

    /// The example of PROTOCOL.md §7, "The conditional catalog", byte for byte.
    #[test]
    fn the_conditional_catalog_encodes_as_protocol_md_shows() {
        let ask = CatalogRequest {
            include_yanked: false,
            if_not: Some("3f09c1a2b4d5-7".into()),
        };
        assert_eq!(
            ask.to_tobj(9).encode(),
            "<tobj type=\"stager.catalog\" id=\"9\"><include_yanked>false</include_yanked><if_not>3f09c1a2b4d5-7</if_not></tobj>"
        );
        let same = Catalog {
            releases: Vec::new(),
            tag: Some("3f09c1a2b4d5-7".into()),
            unchanged: true,
        };
        let text = same.to_tobj(9).encode();
        assert_eq!(
            text,
            "<tobj type=\"stager.catalog.reply\" id=\"9\"><releases></releases><tag>3f09c1a2b4d5-7</tag><unchanged>true</unchanged></tobj>"
        );
        let protocol = include_str!("../../PROTOCOL.md");
        assert!(protocol.contains(&text), "PROTOCOL.md shows another reply");
    }

    #[test]
    fn catalog_round_trips() {
        round_trip(CatalogRequest {
            include_yanked: true,
            if_not: None,
        });
        round_trip(CatalogRequest {
            include_yanked: false,
            if_not: Some("5a0c-17".into()),
        });
        round_trip(CatalogRequest::default());
        round_trip(Catalog::default());
        round_trip(Catalog {
            releases: Vec::new(),
            tag: Some("5a0c-17".into()),
            unchanged: true,
        });
        round_trip(Catalog {
            tag: None,
            unchanged: false,
            releases: vec![ReleaseInfo {
                product: "tool".into(),
                version: "1.0 <beta> & \"x\"".into(),
                notes: "line1\r\nline2".into(),
                published_at: "2026-11-23T10:00:00Z".into(),
                yanked: false,
                signed_by: String::new(),
                published_by: String::new(),
                quarantined: String::new(),
                files: vec![file("a/b.iso"), file("é.txt")],
            }],
        });
    }

    #[test]
    fn stage_round_trips() {
        round_trip(StageRequest {
            product: "tool".into(),
            version: "1.0".into(),
            files: vec!["a/b.iso".into()],
            label: "alice".into(),
            ttl_secs: Some(3600),
        });
        round_trip(StageRequest {
            product: "tool".into(),
            version: "1.0".into(),
            ..Default::default()
        });
        round_trip(StagedArea {
            area_id: "abc".into(),
            ftp_user: "u".into(),
            ftp_password: "p&<>".into(),
            token: "t".into(),
            ftp_url: "ftp://u:p@127.0.0.1:2121/".into(),
            https_base: "https://127.0.0.1:8444/d/t/".into(),
            expires_at: "2026-11-24T10:00:00Z".into(),
            signed_by: String::new(),
            files: vec![file("x")],
        });
        round_trip(StagedArea {
            area_id: "abc".into(),
            ftp_user: "u".into(),
            ftp_password: "p".into(),
            token: "t".into(),
            ftp_url: "ftp://u:p@127.0.0.1:2121/".into(),
            https_base: "https://127.0.0.1:8444/d/t/".into(),
            expires_at: "2026-11-24T10:00:00Z".into(),
            signed_by: "0123456789ABCDEF".into(),
            files: vec![file("x"), file("SHA256SUMS"), file("SHA256SUMS.minisig")],
        });
        round_trip(UnstageRequest {
            area_id: "abc".into(),
        });
        round_trip(Unstaged {
            area_id: "abc".into(),
            removed: true,
        });
        round_trip(YankRequest {
            product: "tool".into(),
            version: "1.0".into(),
        });
        round_trip(Yanked {
            product: "tool".into(),
            version: "1.0".into(),
            already: false,
        });
    }

    #[test]
    fn admin_round_trips() {
        round_trip(AreasRequest {});
        round_trip(AreaList {
            areas: vec![AreaSummary {
                area_id: "a".into(),
                label: "bob".into(),
                product: "p".into(),
                version: "v".into(),
                created_at: "c".into(),
                expires_at: "e".into(),
                file_count: 3,
                bytes: 99,
            }],
        });
        round_trip(StatsRequest {});
        round_trip(Stats {
            stage_count: 5,
            stage_p50_us: 100,
            stage_p99_us: 900,
            stage_max_us: 1000,
            method: "hardlink".into(),
            areas: 2,
            area_bytes: 1 << 40,
            deliveries: 7,
            delivered_bytes: 8,
        });
        round_trip(DeliveriesRequest {
            after_seq: 9,
            limit: Some(10),
        });
        round_trip(DeliveriesRequest::default());
        round_trip(Deliveries {
            deliveries: vec![Delivery {
                seq: 10,
                area_id: "a".into(),
                label: "l".into(),
                file: "f/g".into(),
                bytes: 5,
                protocol: "https".into(),
                at: "t".into(),
            }],
            last_seq: 10,
        });
    }

    #[test]
    fn missing_fields_are_errors() {
        let t = Tobj::new(StageRequest::TYPE, 1);
        assert!(StageRequest::from_tobj(&t).is_err());
        let t = Tobj::new(StagedArea::TYPE, 1);
        assert!(StagedArea::from_tobj(&t).is_err());
        assert!(Stats::from_tobj(&Tobj::new(Catalog::TYPE, 1)).is_err());
        assert!(YankRequest::from_tobj(&Tobj::new(YankRequest::TYPE, 1)).is_err());
    }
}
