//! Drives `ffs_testkit::prereq` in a process of its own, for the kit's own tests (which
//! need a PATH and environment of their choosing without touching the test process's).
//!
//! `prereq-probe command <component> <program> <install hint>`
//! `prereq-probe env <component> <VARIABLE> <install hint>` (present when VARIABLE is set)
//!
//! Prints `present` or `skipped`; a missing prerequisite panics (exit status 101).

use ffs_testkit::prereq;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, component, what, hint] = args.as_slice() else {
        eprintln!("usage: prereq-probe command|env <component> <program|VARIABLE> <hint>");
        std::process::exit(2);
    };
    let present = match mode.as_str() {
        "command" => prereq::require_command(component, what, hint),
        "env" => prereq::require(
            component,
            || std::env::var(what).map_err(|_| format!("{what} is not set")),
            hint,
        ),
        _ => {
            eprintln!("unknown mode {mode:?}");
            std::process::exit(2);
        }
    };
    println!("{}", if present { "present" } else { "skipped" });
}
