//! Process start-up: keeps glibc's `memcpy`/`memset` off `rep movsb`/`rep stosb` on AMD
//! CPUs, where those instructions are many times slower for a misaligned destination
//! (glibc bug 30994, "REP MOVSB performance suffers from page aliasing on Zen 4"; later
//! glibc releases stopped preferring them on AMD Zen 3 and later).
//!
//! Why it matters here: rustls copies every plaintext record into a buffer behind its
//! 5-byte record header, so each 16 KiB copy of a download has a misaligned destination.
//! On the AMD EPYC machines this project runs on, with Debian 12's glibc 2.36, those
//! copies took over a third of a stager's CPU while it served an HTTPS download; with the
//! vector loops the same binary was 1.15–1.43 × faster in each of six alternated downloads
//! (`docs/benchmarks.md`, "Copies on AMD").
//!
//! glibc reads its tunables once, when the process starts, so the only way to set them
//! from inside is to start again: [`reexec_with_vector_copies`] re-executes the running
//! binary (same pid, arguments and environment) with `GLIBC_TUNABLES` extended, once, and
//! only on an AMD CPU with ERMS. An operator's own setting of either threshold is left
//! alone (set one, e.g. to glibc's default 2112, to keep `rep movsb`).

use std::ffi::OsString;

/// The variable glibc reads its tunables from.
pub const TUNABLES_VAR: &str = "GLIBC_TUNABLES";

/// What is added: copies and fills of any size below the non-temporal threshold use the
/// vector loops, never `rep movsb` / `rep stosb`. (`ld.so --list-tunables` shows both
/// applied; glibc 2.36 then rewrites the variable the process sees to its first tunable.)
pub const VECTOR_COPIES: &str =
    "glibc.cpu.x86_rep_movsb_threshold=4294967295:glibc.cpu.x86_rep_stosb_threshold=4294967295";

/// The CPU facts the choice depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    /// The vendor is AMD (`AuthenticAMD`).
    pub amd: bool,
    /// Enhanced `rep movsb`/`stosb` (CPUID leaf 7, EBX bit 9), which makes glibc use them.
    pub erms: bool,
}

impl Cpu {
    /// This machine's CPU (on other architectures: neither).
    pub fn detect() -> Cpu {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{__cpuid, __cpuid_count};
            // Leaf 0: the vendor ("AuthenticAMD" in EBX, EDX, ECX) and the highest leaf;
            // leaf 7 is read only when it exists.
            let leaf0 = __cpuid(0);
            let amd = (leaf0.ebx, leaf0.edx, leaf0.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
            let erms = leaf0.eax >= 7 && (__cpuid_count(7, 0).ebx >> 9) & 1 == 1;
            Cpu { amd, erms }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Cpu {
            amd: false,
            erms: false,
        }
    }
}

/// The `GLIBC_TUNABLES` value to start again with, or `None` to keep running as is: not
/// an AMD CPU with ERMS, or either threshold already set (by the operator, or by this
/// process before it re-executed).
pub fn tunables_for(cpu: Cpu, current: Option<&str>) -> Option<String> {
    if !(cpu.amd && cpu.erms) {
        return None;
    }
    let current = current.unwrap_or("");
    if current.contains("x86_rep_movsb_threshold") || current.contains("x86_rep_stosb_threshold") {
        return None;
    }
    Some(if current.is_empty() {
        VECTOR_COPIES.to_owned()
    } else {
        format!("{current}:{VECTOR_COPIES}")
    })
}

/// Re-executes this binary with [`VECTOR_COPIES`] added to `GLIBC_TUNABLES` when
/// [`tunables_for`] says so; returns when it does not (or when the exec fails: the process
/// then runs on with glibc's own choice). Call it first thing in `main`, before threads or
/// files are opened. Only with glibc on Linux; elsewhere it does nothing.
pub fn reexec_with_vector_copies() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;
        let current = std::env::var_os(TUNABLES_VAR);
        let current = match current.as_deref().map(|v| v.to_str()) {
            None => None,
            Some(Some(v)) => Some(v),
            Some(None) => return, // not UTF-8: not ours to rewrite
        };
        let Some(value) = tunables_for(Cpu::detect(), current) else {
            return;
        };
        let args: Vec<OsString> = std::env::args_os().collect();
        let Some((arg0, rest)) = args.split_first() else {
            return;
        };
        // Only returns on failure.
        let _ = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(rest)
            .env(TUNABLES_VAR, value)
            .exec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD: Cpu = Cpu {
        amd: true,
        erms: true,
    };

    #[test]
    fn only_amd_with_erms_starts_again() {
        assert_eq!(tunables_for(AMD, None).as_deref(), Some(VECTOR_COPIES));
        for cpu in [
            Cpu {
                amd: false,
                erms: true,
            },
            Cpu {
                amd: true,
                erms: false,
            },
        ] {
            assert_eq!(tunables_for(cpu, None), None, "{cpu:?}");
        }
    }

    #[test]
    fn other_tunables_are_kept_and_a_set_threshold_is_respected() {
        assert_eq!(
            tunables_for(AMD, Some("glibc.malloc.arena_max=2")).as_deref(),
            Some(format!("glibc.malloc.arena_max=2:{VECTOR_COPIES}").as_str())
        );
        assert_eq!(tunables_for(AMD, Some("")).as_deref(), Some(VECTOR_COPIES));
        // Set by the operator, or by this process before it started again: no loop.
        for set in [
            "glibc.cpu.x86_rep_movsb_threshold=2048",
            "glibc.cpu.x86_rep_stosb_threshold=2048",
            VECTOR_COPIES,
        ] {
            assert_eq!(tunables_for(AMD, Some(set)), None, "{set}");
        }
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn the_cpu_is_read_as_the_kernel_reads_it() {
        let info = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
        let field = |name: &str| {
            info.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let flags = field("flags");
        let cpu = Cpu::detect();
        assert_eq!(cpu.amd, field("vendor_id") == "AuthenticAMD", "{cpu:?}");
        assert_eq!(cpu.erms, flags.split(' ').any(|f| f == "erms"), "{cpu:?}");
    }
}
