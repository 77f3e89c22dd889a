//! Test prerequisites that fail loudly: see the [crate documentation](crate).

use std::ffi::OsStr;
use std::fmt::Display;
use std::path::{Path, PathBuf};

/// The opt-out variable: a comma (or space) separated list of component names to leave out.
pub const SKIP_VAR: &str = "FFS_TEST_SKIP";
/// Where the exercised/skipped markers go (set by `./test.sh`).
pub const DIR_VAR: &str = "FFS_TEST_COMPONENTS_DIR";

/// What a check returns: `true`/`Ok(_)` when the prerequisite is present; `false` or
/// `Err(reason)` when it is missing (the reason goes into the failure message).
pub trait Outcome {
    /// `Ok(())` when present, `Err(reason)` when missing.
    fn into_outcome(self) -> Result<(), String>;
}

impl Outcome for bool {
    fn into_outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the check failed".to_owned())
        }
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Requires `component`, present when `check` says so.
///
/// Returns `true` (and records `component` as exercised) when present. Panics with
/// `install_hint` (for example `apt-get install nftables`) when missing. Returns `false`
/// without running `check` (and records the skip) only when `FFS_TEST_SKIP` names
/// `component`.
#[track_caller]
pub fn require<O: Outcome>(component: &str, check: impl FnOnce() -> O, install_hint: &str) -> bool {
    obtain(component, || check().into_outcome(), install_hint).is_some()
}

/// Like [`require`], for a check that yields what the test then uses (a database URL, a
/// program's path, a prepared namespace): `Some(value)` when present, `None` only when
/// `FFS_TEST_SKIP` names `component` (then `get` is not run); panics with `install_hint`
/// when `get` fails.
#[track_caller]
pub fn obtain<T, E: Display>(
    component: &str,
    get: impl FnOnce() -> Result<T, E>,
    install_hint: &str,
) -> Option<T> {
    if skipped(component) {
        record_skip(component);
        return None;
    }
    match get() {
        Ok(value) => {
            record(component, "exercised");
            Some(value)
        }
        Err(reason) => panic!(
            "{}",
            missing_message(component, &reason.to_string(), install_hint)
        ),
    }
}

/// Requires the executable `program` on PATH, as [`require`] does.
#[track_caller]
pub fn require_command(component: &str, program: &str, install_hint: &str) -> bool {
    require(
        component,
        || find_command(program).ok_or_else(|| format!("`{program}` is not on PATH")),
        install_hint,
    )
}

/// The first executable file named `program` in PATH's directories (or `program` itself
/// when it contains a `/` and is executable).
pub fn find_command(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return is_executable(Path::new(program)).then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// Whether `FFS_TEST_SKIP` names `component`.
pub fn skipped(component: &str) -> bool {
    std::env::var_os(SKIP_VAR).is_some_and(|v| skip_list(&v).any(|c| c == component))
}

/// The directory holding `exercised/` and `skipped/` markers.
pub fn components_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_VAR).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test binary> (or target/<profile>/<binary>): the profile dir.
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.pop();
    }
    dir.join("ffs-test-components")
}

fn skip_list(v: &OsStr) -> impl Iterator<Item = String> + '_ {
    v.to_str()
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn missing_message(component: &str, reason: &str, install_hint: &str) -> String {
    format!(
        "missing test prerequisite `{component}`: {reason}.\n\
         Install it: {install_hint}\n\
         (or run ./test.sh, which installs every test prerequisite and starts PostgreSQL; \
         to leave this part out on purpose, set {SKIP_VAR}={component})"
    )
}

fn record_skip(component: &str) {
    eprintln!(
        "\n********************************************************************\n\
         ** SKIPPED `{component}`: left out on purpose by {SKIP_VAR}; this test did\n\
         ** not exercise it. A run with {SKIP_VAR} set is not a full test run.\n\
         ********************************************************************\n"
    );
    record(component, "skipped");
}

/// Writes the marker `<dir>/<kind>/<component>`. Failing to record fails the test: a
/// summary that under-reports would defeat the purpose.
fn record(component: &str, kind: &str) {
    assert!(
        !component.is_empty()
            && component
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "component names are [A-Za-z0-9_-]+, got {component:?}"
    );
    let dir = components_dir().join(kind);
    if let Err(e) =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(component), b""))
    {
        panic!(
            "cannot record test component `{component}` under {}: {e}",
            dir.display()
        );
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
