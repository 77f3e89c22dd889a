//! `ffs keys signing generate` and the operator side of signing-key passphrases: where a
//! new key's passphrase comes from (a 0600 file, or a no-echo prompt asked twice), and how
//! the CLI commands that sign (`ffs publish`, `ffs repo verify`) open a protected key
//! (`[stager] signing_key_passphrase_file`, else a no-echo prompt on a terminal).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ftp_stager::signing::{self, Passphrase, Signer};

/// `ffs keys signing generate`.
pub fn signing_generate(
    out: &Path,
    public: Option<PathBuf>,
    passphrase_file: Option<&Path>,
    no_passphrase: bool,
) -> anyhow::Result<()> {
    let public = public.unwrap_or_else(|| out.with_extension("pub"));
    let pass = match passphrase_file {
        Some(f) => Some(Passphrase::read_file(f)?),
        None if no_passphrase || !std::io::stdin().is_terminal() => None,
        None => prompt_new()?,
    };
    let id = signing::generate_with(out, &public, pass.as_ref())?;
    let how = if pass.is_some() {
        "protected by its passphrase"
    } else {
        "unencrypted"
    };
    println!(
        "wrote {} (secret, mode 0600, {how}: keep it on the publishing host only) and {} (public), key id {id}",
        out.display(),
        public.display()
    );
    println!(
        "set [stager] signing_key = {:?}{} to sign new releases, and add {:?} to [web] signing_public_keys so customers can verify them",
        out.display().to_string(),
        if pass.is_some() {
            " and signing_key_passphrase_file (a 0600 file holding the passphrase)"
        } else {
            ""
        },
        public.display().to_string()
    );
    Ok(())
}

/// Asks twice without echo; an empty answer means no passphrase.
fn prompt_new() -> anyhow::Result<Option<Passphrase>> {
    let a = rpassword::prompt_password("Passphrase for the new signing key (empty for none): ")
        .context("cannot read the passphrase")?;
    if a.is_empty() {
        return Ok(None);
    }
    let b = rpassword::prompt_password("Repeat it: ").context("cannot read the passphrase")?;
    if a != b {
        bail!("the passphrases do not match");
    }
    Ok(Some(Passphrase::new(a)?))
}

/// The `[stager] signing_key` for a CLI command that signs: `None` when none is set; a
/// protected key is opened with `signing_key_passphrase_file`, or else with a no-echo
/// prompt when standard input is a terminal.
pub fn cli_signer(sc: &ftp_stager::StagerConfig) -> anyhow::Result<Option<Signer>> {
    if sc.signing_key.as_os_str().is_empty() {
        return Ok(None);
    }
    let protected = signing::is_encrypted(&sc.signing_key)?;
    if !protected || !sc.signing_key_passphrase_file.as_os_str().is_empty() {
        return Ok(Signer::from_config(sc)?);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "the signing key {} is protected by a passphrase: set [stager] signing_key_passphrase_file (a 0600 file holding it), or run this on a terminal to be asked",
            sc.signing_key.display()
        );
    }
    let p = rpassword::prompt_password(format!(
        "Passphrase for the signing key {}: ",
        sc.signing_key.display()
    ))
    .context("cannot read the passphrase")?;
    Ok(Some(Signer::load_with(
        &sc.signing_key,
        Some(&Passphrase::new(p)?),
    )?))
}
