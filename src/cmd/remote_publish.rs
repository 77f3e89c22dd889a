//! `ffs publish --remote https://stager:8444 --token-file T PRODUCT VERSION PATH…`: publish
//! from a build machine over the stager's HTTPS interface (`ftp_stager::upload`).
//!
//! A file under 64 MiB is hashed locally first; the stager is asked whether it has the
//! object (then nothing is sent) or how much of it arrived earlier (`X-Upload-Offset`),
//! and only the missing bytes are streamed from disk (1 MiB at a time, never the whole file
//! in memory). A larger file is read once (`one_pass`): it is sent as an upload named by
//! the client (an id from its size and first and last MiB, so a rerun finds it) while
//! another thread hashes it; once the hash is known the stager is asked whether it has the
//! object (then sending stops), and the hash is declared with the last request. Either way
//! the stager hashes what it receives and accepts an object only if that matches; the
//! release appears when the final commit writes its manifest. A connection that breaks
//! mid-upload is retried from the offset the stager reports; a rerun after a kill resumes
//! the same way.
//!
//! HTTP/1.1 through `ftp_stager::http_client` (hyper over rustls); the server certificate
//! is checked against `--ca-cert` (default: the system bundle), or, with `--pin SHA256`,
//! must be exactly the certificate with that SHA-256 fingerprint (the one the stager logs
//! as `tls_sha256`; for a self-signed stager). A stager busy with this
//! token's other uploads (429) is waited for as its `Retry-After` says.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ftp_stager::http_client::{HttpsClient, Trust, file_body};

/// `--remote` options of `ffs publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// Publish to this stager over HTTPS, e.g. https://files.example.com:8444.
    #[arg(long)]
    pub remote: Option<String>,
    /// File holding the publish token (`ffs publish-token create`), mode 0600.
    #[arg(long, requires = "remote")]
    pub token_file: Option<PathBuf>,
    /// PEM certificates to trust for the stager (default: the system CA bundle).
    #[arg(long, requires = "remote", conflicts_with = "pin")]
    pub ca_cert: Option<PathBuf>,
    /// Trust only the stager certificate with this SHA-256 fingerprint (hex, colons
    /// optional), as the stager logs it (`tls_sha256`): for a self-signed stager.
    #[arg(long, requires = "remote")]
    pub pin: Option<String>,
    /// Print a JSON summary instead of text (and no progress bar).
    #[arg(long, requires = "remote")]
    pub json: bool,
}

/// Files at least this large are hashed while they are sent (one reading) instead of
/// before (two readings).
const ONE_PASS_MIN: u64 = 64 << 20;

/// The upload id of a large file: from its size and its first and last MiB, so a rerun
/// after an interruption finds the part it left (`/publish/v1/uploads/ID`). Two files
/// sharing those but not their middle would share an id: the stager's hash check refuses
/// the mixture (422) and the upload starts again from zero.
fn upload_id(p: &Path, size: u64) -> anyhow::Result<String> {
    use sha2::Digest as _;
    use std::io::{Read as _, Seek as _};
    let mut f = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    let mut h = sha2::Sha256::new();
    h.update(b"ffs-upload-v1\0");
    h.update(size.to_le_bytes());
    for at in [0, size.saturating_sub(1 << 20)] {
        f.seek(std::io::SeekFrom::Start(at))?;
        let mut piece = Vec::with_capacity(1 << 20);
        (&mut f).take(1 << 20).read_to_end(&mut piece)?;
        h.update(&piece);
    }
    Ok(hex::encode(&h.finalize()[..16]))
}

fn offset_of(r: &ftp_stager::http_client::Response) -> u64 {
    r.header("X-Upload-Offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Counts a failed upload round of `name` (a dropped connection or an unexpected answer):
/// the caller resumes after each of the first three, and gives up with this error on the
/// fourth.
fn count_failure(
    tries: &mut u32,
    outcome: Result<ftp_stager::http_client::Response, ftp_stager::http_client::ClientError>,
    name: &str,
) -> anyhow::Result<()> {
    *tries += 1;
    if *tries <= 3 {
        return Ok(());
    }
    match outcome {
        Ok(r) => bail!("{name}: the stager answered {}: {}", r.status, r.text()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("uploading {name}"))),
    }
}

/// Waits out a 429 as its `Retry-After` says (1–60 s; 5 s when absent), telling the user.
async fn wait_busy(
    r: &ftp_stager::http_client::Response,
    name: &str,
    bar: &indicatif::ProgressBar,
) {
    let secs: u64 = r
        .header("Retry-After")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 60);
    bar.suspend(|| {
        eprintln!(
            "{name}: the stager is busy ({}); retrying in {secs} s",
            r.text()
        )
    });
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
}

/// Uploads a large file in one reading: it is sent to `/publish/v1/uploads/ID` while a
/// second thread hashes it; once the hash is known the stager is asked whether it has the
/// object (then the upload is dropped), and the hash is declared with the last request,
/// the stager checking it against what it hashed on arrival. Returns (sha256, bytes
/// sent, whether the stager had it already).
// Over 100 lines, knowingly: one loop holding the upload's retry, 429 wait, dedup and
// declaration cases together, as the protocol reads.
async fn one_pass(
    remote: &HttpsClient,
    i: &ftp_stager::publish::Input,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(String, u64, bool)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (src, size) = (i.source.clone(), i.size);
    let id = tokio::task::spawn_blocking(move || upload_id(&src, size)).await??;
    let src = i.source.clone();
    let mut hashing = Some(tokio::task::spawn_blocking(move || sha256_file(&src)));
    let mut sha: Option<String> = None;
    let mut sent = 0u64;
    let mut tries = 0;
    loop {
        let r = remote.get(&format!("/publish/v1/uploads/{id}")).await?;
        match r.status {
            200 => {}
            401 => bail!("the stager refused the token: {}", r.text()),
            s => bail!("{}: the stager answered {s}: {}", i.name, r.text()),
        }
        let have = offset_of(&r).min(size);
        let declare = sha
            .as_ref()
            .map(|x| format!("&sha256={x}"))
            .unwrap_or_default();
        let path = format!("/publish/v1/uploads/{id}?offset={have}&size={size}{declare}");
        let counted = std::sync::Arc::new(AtomicU64::new(0));
        let (c, b) = (counted.clone(), bar.clone());
        let body = file_body(&i.source, have, size - have, move |piece| {
            c.fetch_add(piece.len() as u64, Ordering::Relaxed);
            b.inc(piece.len() as u64);
        });
        let put = remote.put_stream(&path, size - have, body);
        tokio::pin!(put);
        let answer = match hashing.as_mut() {
            Some(h) => tokio::select! {
                r = &mut put => r,
                got = h => {
                    hashing = None;
                    let x = got.context("hashing")??;
                    let s = remote.get(&format!("/publish/v1/objects/{x}")).await?;
                    sha = Some(x.clone());
                    if s.status == 200 {
                        // The stager has it: stop sending (the partial upload is left for
                        // its sweeper).
                        return Ok((x, sent + counted.load(Ordering::Relaxed), true));
                    }
                    put.await
                }
            },
            None => put.await,
        };
        match answer {
            Ok(r) if r.status == 201 || r.status == 200 => {
                // 200: the object was there already (an early answer).
                let present = r.status == 200;
                sent += if present {
                    counted.load(Ordering::Relaxed)
                } else {
                    size - have
                };
                let Some(x) = sha else {
                    bail!("{}: the stager stored an upload without its hash", i.name)
                };
                return Ok((x, sent, present));
            }
            Ok(r) if r.status == 202 && offset_of(&r) == size => {
                sent += size - have;
                // All bytes are there; declare the hash (an empty request).
                let x = match (sha.clone(), hashing.take()) {
                    (Some(x), _) => x,
                    (None, Some(h)) => h.await.context("hashing")??,
                    (None, None) => bail!("{}: no hash", i.name),
                };
                sha = Some(x.clone());
                let d = remote
                    .put_stream(
                        &format!("/publish/v1/uploads/{id}?offset={size}&size={size}&sha256={x}"),
                        0,
                        file_body(&i.source, size, 0, |_| {}),
                    )
                    .await?;
                match d.status {
                    200 | 201 => return Ok((x, sent, false)),
                    422 if tries < 3 => {
                        // Another file shared this one's id: the stager dropped the
                        // mixture; send again from zero.
                        tries += 1;
                        continue;
                    }
                    s => bail!("{}: the stager answered {s}: {}", i.name, d.text()),
                }
            }
            Ok(r) if r.status == 401 || r.status == 403 || r.status == 413 || r.status == 400 => {
                bail!("{}: {} {}", i.name, r.status, r.text())
            }
            Ok(r) if r.status == 429 => wait_busy(&r, &i.name, bar).await,
            other => {
                count_failure(&mut tries, other, &i.name)?;
                // What arrived counts; the next round resumes where the stager is.
                let now = offset_of(&remote.get(&format!("/publish/v1/uploads/{id}")).await?);
                sent += now.saturating_sub(have);
            }
        }
    }
}

fn sha256_file(p: &Path) -> anyhow::Result<String> {
    ftp_stager::fsutil::sha256_file(p).with_context(|| format!("cannot read {}", p.display()))
}

/// Runs `ffs publish --remote …`.
// Over 100 lines, knowingly: the client's protocol in the order a reader of the README's
// curl recipe expects (hash, ask what is missing, upload with resume and 429 waits,
// commit, report); each step is a loop with its own progress and error wording.
pub async fn run(
    product: &str,
    version: &str,
    paths: &[PathBuf],
    notes: &str,
    a: &RemoteArgs,
) -> anyhow::Result<()> {
    let url = a.remote.as_deref().context("--remote")?;
    let token_file = a
        .token_file
        .as_deref()
        .context("--remote needs --token-file (a file holding the publish token, mode 0600)")?;
    let token = String::from_utf8(commlink::secret_file::read_private(token_file)?)
        .context("the token file is not text")?
        .trim()
        .to_owned();
    let trust = match (&a.pin, &a.ca_cert) {
        (Some(p), _) => Trust::Pin(ftp_stager::http_client::parse_pin(p).context("--pin")?),
        (None, Some(ca)) => Trust::CaFile(ca.clone()),
        (None, None) => Trust::System,
    };
    let remote = HttpsClient::new(url, trust)
        .context("--remote")?
        .with_bearer(&token)
        .context("the token file")?;
    let paths2 = paths.to_vec();
    // Small files are hashed first (then the stager is asked whether it has them); large
    // ones are hashed while they are sent (`one_pass`).
    let inputs = tokio::task::spawn_blocking(
        move || -> anyhow::Result<Vec<(ftp_stager::publish::Input, String)>> {
            let inputs = ftp_stager::publish::collect_inputs(&paths2)?;
            inputs
                .into_iter()
                .map(|i| {
                    let sha = if i.size >= ONE_PASS_MIN {
                        String::new()
                    } else {
                        sha256_file(&i.source)?
                    };
                    Ok((i, sha))
                })
                .collect()
        },
    )
    .await??;
    if inputs.is_empty() {
        bail!("the inputs hold no files");
    }
    let mut inputs = inputs;

    // What does the stager lack?
    let mut todo = Vec::new();
    let mut skipped = 0usize;
    for (i, sha) in &inputs {
        if sha.is_empty() {
            continue;
        }
        let r = remote.get(&format!("/publish/v1/objects/{sha}")).await?;
        match r.status {
            200 => skipped += 1,
            404 => {
                let have: u64 = r
                    .header("X-Upload-Offset")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                todo.push((i, sha.clone(), have.min(i.size)));
            }
            401 => bail!("the stager refused the token: {}", r.text()),
            s => bail!("the stager answered {s} for object {sha}: {}", r.text()),
        }
    }
    let to_send: u64 = todo.iter().map(|(i, _, have)| i.size - have).sum::<u64>()
        + inputs
            .iter()
            .filter(|(_, sha)| sha.is_empty())
            .map(|(i, _)| i.size)
            .sum::<u64>();
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(to_send);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    };
    let mut sent = 0u64;
    for (i, sha, mut offset) in todo {
        bar.set_message(i.name.clone());
        let mut tries = 0;
        loop {
            let counter = bar.clone();
            let body = file_body(&i.source, offset, i.size - offset, move |piece| {
                counter.inc(piece.len() as u64)
            });
            let r = remote
                .put_stream(
                    &format!("/publish/v1/objects/{sha}?offset={offset}&size={}", i.size),
                    i.size - offset,
                    body,
                )
                .await;
            match r {
                Ok(r) if r.status == 200 || r.status == 201 => {
                    sent += i.size - offset;
                    break;
                }
                Ok(r) if r.status == 422 => {
                    bail!("{}: the stager refused the upload: {}", i.name, r.text())
                }
                Ok(r) if r.status == 401 || r.status == 403 || r.status == 413 => {
                    bail!("{}: {} {}", i.name, r.status, r.text())
                }
                // The token's other uploads (another pipeline) hold every slot.
                Ok(r) if r.status == 429 => wait_busy(&r, &i.name, &bar).await,
                other => {
                    count_failure(&mut tries, other, &i.name)?;
                    // Ask where to resume.
                    let s = remote.get(&format!("/publish/v1/objects/{sha}")).await?;
                    if s.status == 200 {
                        break;
                    }
                    let have: u64 = s
                        .header("X-Upload-Offset")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    sent += have.saturating_sub(offset);
                    offset = have.min(i.size);
                }
            }
        }
    }
    for (i, sha) in inputs.iter_mut().filter(|(_, sha)| sha.is_empty()) {
        bar.set_message(i.name.clone());
        let (got, n, present) = one_pass(&remote, i, &bar).await?;
        *sha = got;
        sent += n;
        skipped += usize::from(present);
    }
    bar.finish_and_clear();

    let files: Vec<serde_json::Value> = inputs
        .iter()
        .map(|(i, sha)| serde_json::json!({"name": i.name, "size": i.size, "sha256": sha}))
        .collect();
    let body = serde_json::json!({"notes": notes, "files": files});
    let r = remote
        .post_json(&format!("/publish/v1/releases/{product}/{version}"), &body)
        .await?;
    if r.status != 201 {
        bail!(
            "the stager refused the release ({}): {}",
            r.status,
            r.text()
        );
    }
    let m: serde_json::Value = serde_json::from_slice(&r.body).context("the stager's answer")?;
    let total: u64 = inputs.iter().map(|(i, _)| i.size).sum();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "product": product,
                "version": version,
                "files": inputs.len(),
                "bytes": total,
                "objects_uploaded": inputs.len() - skipped,
                "objects_present": skipped,
                "bytes_sent": sent,
                "signed_by": m["signed_by"],
                "published_at": m["published_at"],
            })
        );
    } else {
        let signed = m["signed_by"].as_str().unwrap_or_default();
        println!(
            "published {product} {version} to {url}: {} files, {total} bytes; sent {sent} bytes ({skipped} files the stager had already); {}",
            inputs.len(),
            if signed.is_empty() {
                "unsigned".to_owned()
            } else {
                format!("signed by key {signed}")
            }
        );
    }
    Ok(())
}
