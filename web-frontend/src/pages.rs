//! The askama page structs (templates live in the top-level `templates/`) and the view
//! structs they show. Views hold display-ready strings; handlers build them.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use askama::Template;

use crate::error::AppError;
use crate::session::SessionUser;

/// The navigation bar: who is signed in and the token for the logout form.
pub struct Nav {
    /// The signed-in user, if any.
    pub user: Option<SessionUser>,
    /// CSRF token for the logout form.
    pub csrf: String,
    /// Which nav entry is current.
    pub active: &'static str,
}

/// Renders a page with a status.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Result<HttpResponse, AppError> {
    let body = page
        .render()
        .map_err(|e| AppError::Internal(format!("template: {e}")))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// Any error as a page (no session needed).
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    /// Heading.
    pub title: &'a str,
    /// Explanation.
    pub message: &'a str,
    /// HTTP status.
    pub code: u16,
}

/// The sign-in form.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// Navigation.
    pub nav: Nav,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The login to pre-fill.
    pub login: String,
}

/// One file of a release.
pub struct FileView {
    /// Release-relative name.
    pub name: String,
    /// Human size.
    pub size: String,
    /// Exact size in bytes.
    pub bytes: u64,
    /// SHA-256 hex.
    pub sha256: String,
}

/// One release on the products page.
pub struct ReleaseView {
    /// Product name.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release notes.
    pub notes: String,
    /// Publication time.
    pub published: String,
    /// Total size.
    pub total: String,
    /// Files.
    pub files: Vec<FileView>,
    /// Anchor id for the page.
    pub anchor: String,
    /// Who signed the release's `SHA256SUMS`.
    pub signature: SignatureView,
}

/// A release's signature state, as the page shows it.
pub struct SignatureView {
    /// Key id that signed it; empty = unsigned.
    pub key_id: String,
    /// Where this site serves that key; `None` when unsigned or when this site does not
    /// list the key (then the page says so rather than offering it).
    pub key_url: Option<String>,
}

/// The vendor's signing keys and the two-line recipe, from `[web] signing_public_keys`.
pub struct KeysView {
    /// The current key's id.
    pub key_id: String,
    /// Its public key file's text.
    pub key_text: String,
    /// Where to download it.
    pub key_url: String,
    /// Older keys (still verifying the releases they signed): (key id, url).
    pub older: Vec<(String, String)>,
}

/// One product and its releases, newest first.
pub struct ProductView {
    /// Product name.
    pub name: String,
    /// The entitlement's version constraint, for display.
    pub versions: String,
    /// Entitlement expiry, if any.
    pub until: Option<String>,
    /// Releases the customer may download.
    pub releases: Vec<ReleaseView>,
}

/// "My products".
#[derive(Template)]
#[template(path = "products.html")]
pub struct ProductsPage {
    /// Navigation.
    pub nav: Nav,
    /// Products, alphabetically.
    pub products: Vec<ProductView>,
    /// Set when the stager is unreachable: why preparing is not possible now.
    pub stager_down: Option<String>,
    /// The signing keys, when any is configured.
    pub keys: Option<KeysView>,
}

/// A staged file's links.
pub struct LinkView {
    /// Name.
    pub name: String,
    /// HTTPS URL straight to the stager.
    pub url: String,
    /// Human size.
    pub size: String,
    /// SHA-256 hex.
    pub sha256: String,
}

/// The result of "Prepare download".
#[derive(Template)]
#[template(path = "prepared.html")]
pub struct PreparedPage {
    /// Navigation.
    pub nav: Nav,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// `ftp://user:pass@host:port/`.
    pub ftp_url: String,
    /// One-time FTP user.
    pub ftp_user: String,
    /// One-time FTP password.
    pub ftp_password: String,
    /// HTTPS directory listing of the area.
    pub https_base: String,
    /// Expiry.
    pub expires: String,
    /// Files with links.
    pub files: Vec<LinkView>,
    /// A copy-paste shell recipe.
    pub recipe: String,
    /// Who signed the release.
    pub signature: SignatureView,
    /// The public key's text, when the release is signed with a key this site lists.
    pub key_text: Option<String>,
    /// `sha256sum -c` options: `--ignore-missing ` when only some files were prepared.
    pub sums_opts: String,
}

/// One history row.
pub struct HistoryView {
    /// History id.
    pub id: String,
    /// Who (admin view).
    pub login: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Files, comma-separated.
    pub files: String,
    /// When staged.
    pub at: String,
    /// From where.
    pub client_addr: String,
    /// Bytes delivered so far.
    pub delivered: String,
    /// Whether a re-prepare is offered (still entitled and published).
    pub can_prepare: bool,
}

/// "My downloads".
#[derive(Template)]
#[template(path = "downloads.html")]
pub struct DownloadsPage {
    /// Navigation.
    pub nav: Nav,
    /// Newest first.
    pub rows: Vec<HistoryView>,
}

/// The staging-latency panel and link state.
pub struct StatsView {
    /// Stage requests served.
    pub count: u64,
    /// p50 in µs.
    pub p50_us: u64,
    /// p99 in µs.
    pub p99_us: u64,
    /// max in µs.
    pub max_us: u64,
    /// Staging method (hardlink/reflink/copy).
    pub method: String,
    /// Live areas.
    pub areas: u64,
    /// Bytes in areas.
    pub area_bytes: String,
    /// Deliveries.
    pub deliveries: u64,
    /// Bytes delivered.
    pub delivered: String,
}

/// Admin dashboard.
#[derive(Template)]
#[template(path = "admin_index.html")]
pub struct AdminIndexPage {
    /// Navigation.
    pub nav: Nav,
    /// Every stager: name, link state, stats when reachable.
    pub stagers: Vec<StagerCard>,
    /// Agent link up.
    pub agent_up: bool,
    /// Agent connections up (several agents: one each).
    pub agents_up: usize,
}

/// One stager on the admin index.
pub struct StagerCard {
    /// Its name.
    pub name: String,
    /// Link up.
    pub up: bool,
    /// Stats, when reachable.
    pub stats: Option<StatsView>,
}

/// A catalog row (admin).
pub struct CatalogRow {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Published.
    pub published: String,
    /// Yanked.
    pub yanked: bool,
    /// File count.
    pub files: usize,
    /// Total size.
    pub total: String,
    /// Notes.
    pub notes: String,
    /// Key id that signed it; empty = unsigned.
    pub signed_by: String,
    /// Who published it (may be empty).
    pub published_by: String,
    /// Why it was quarantined; empty = not quarantined.
    pub quarantined: String,
}

/// Admin catalog.
#[derive(Template)]
#[template(path = "admin_catalog.html")]
pub struct AdminCatalogPage {
    /// Navigation.
    pub nav: Nav,
    /// Releases, by product then newest first.
    pub rows: Vec<CatalogRow>,
    /// The most recent publishes, newest first.
    pub recent: Vec<CatalogRow>,
    /// Feedback from a yank.
    pub notice: Option<String>,
}

/// An active area (admin).
pub struct AreaRow {
    /// Area id.
    pub area_id: String,
    /// The stager that holds it.
    pub stager: String,
    /// Who (the label given at staging: the customer's login).
    pub who: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Created.
    pub created: String,
    /// Expires.
    pub expires: String,
    /// Files.
    pub files: u64,
    /// Size.
    pub size: String,
}

/// Admin: active download areas.
#[derive(Template)]
#[template(path = "admin_areas.html")]
pub struct AdminAreasPage {
    /// Navigation.
    pub nav: Nav,
    /// Areas.
    pub rows: Vec<AreaRow>,
    /// Feedback from a revoke.
    pub notice: Option<String>,
}

/// Admin: recent history.
#[derive(Template)]
#[template(path = "admin_history.html")]
pub struct AdminHistoryPage {
    /// Navigation.
    pub nav: Nav,
    /// Rows, newest first.
    pub rows: Vec<HistoryView>,
}

/// A customer row (admin).
pub struct CustomerRow {
    /// Login.
    pub login: String,
    /// Name.
    pub name: String,
    /// E-mail.
    pub email: String,
    /// Admin.
    pub admin: bool,
    /// Disabled.
    pub disabled: bool,
}

/// An entitlement row (admin).
pub struct EntitlementRow {
    /// Product.
    pub product: String,
    /// Version constraint.
    pub versions: String,
    /// Expiry or "never".
    pub until: String,
}

/// Admin: customers.
#[derive(Template)]
#[template(path = "admin_customers.html")]
pub struct AdminCustomersPage {
    /// Navigation.
    pub nav: Nav,
    /// Customers.
    pub rows: Vec<CustomerRow>,
}

/// Admin: one customer with entitlements.
#[derive(Template)]
#[template(path = "admin_customer.html")]
pub struct AdminCustomerPage {
    /// Navigation.
    pub nav: Nav,
    /// The customer.
    pub customer: CustomerRow,
    /// Entitlements.
    pub entitlements: Vec<EntitlementRow>,
    /// Recent history.
    pub history: Vec<HistoryView>,
    /// Outcome of the last edit.
    pub notice: Option<String>,
    /// The login, URL-encoded, for the edit forms' actions.
    pub login_path: String,
}
