//! `ffs publish --remote https://stager:8444 --token-file T PRODUCT VERSION PATH…`: publish
//! from a build machine over the stager's HTTPS interface (`ftp_stager::upload`).
//!
//! Each file is hashed locally; the stager is asked whether it has the object (then nothing
//! is sent) or how much of it arrived earlier (`X-Upload-Offset`), and only the missing
//! bytes are streamed from disk (1 MiB at a time, never the whole file in memory). The
//! stager re-hashes every object before accepting it; the release appears when the final
//! commit writes its manifest. A connection that breaks mid-upload is retried from the
//! offset the stager reports; a rerun after a kill resumes the same way.
//!
//! HTTP/1.1 over rustls, one connection per request (`Connection: close`); the server
//! certificate is checked against `--ca-cert` (default: the system bundle), or, with
//! `--pin SHA256`, must be exactly the certificate with that SHA-256 fingerprint (the one
//! the stager logs as `tls_sha256`; for a self-signed stager). A stager busy with this
//! token's other uploads (429) is waited for as its `Retry-After` says.

use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

struct Remote {
    host: String,
    port: u16,
    token: String,
    tls: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }
}

enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of `path` from `offset`.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        bar: &'a indicatif::ProgressBar,
    },
}

/// Parses a SHA-256 fingerprint: 64 hex digits, colons or spaces allowed.
fn parse_pin(pin: &str) -> anyhow::Result<[u8; 32]> {
    let h: String = pin
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let v = hex::decode(&h).ok().filter(|v| v.len() == 32);
    v.and_then(|v| v.try_into().ok())
        .with_context(|| format!("--pin {pin:?}: expected a SHA-256 fingerprint (64 hex digits)"))
}

/// Accepts exactly the server certificate whose SHA-256 is the pin (whatever its names,
/// issuer or dates); handshake signatures are still verified against that certificate.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the stager's certificate has SHA-256 {}, not the pinned one",
                hex::encode(got)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// How the stager's certificate is checked.
enum Trust<'a> {
    Ca(&'a Path),
    Pin([u8; 32]),
}

impl Remote {
    fn new(url: &str, token: String, trust: Trust<'_>) -> anyhow::Result<Remote> {
        let rest = url
            .strip_prefix("https://")
            .with_context(|| format!("--remote {url}: expected https://HOST[:PORT]"))?
            .trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(']') || h.ends_with(']') => (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse()
                    .with_context(|| format!("--remote {url}: bad port"))?,
            ),
            _ => (rest.to_owned(), 443),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algs = provider.signature_verification_algorithms;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?;
        let cfg = match trust {
            Trust::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, algs }))
                .with_no_client_auth(),
            Trust::Ca(ca) => {
                let pem =
                    std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let c = c.with_context(|| format!("{}: bad PEM", ca.display()))?;
                    roots
                        .add(c)
                        .with_context(|| format!("{}: unusable certificate", ca.display()))?;
                }
                if roots.is_empty() {
                    bail!("{} holds no certificates", ca.display());
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("--remote {url}: bad host name"))?;
        Ok(Remote {
            host,
            port,
            token,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            name,
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        ctype: &str,
        body: Body<'_>,
    ) -> anyhow::Result<Resp> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot connect to {}:{}", self.host, self.port))?;
        let mut s = self
            .tls
            .connect(self.name.clone(), tcp)
            .await
            .with_context(|| format!("TLS with {}:{}", self.host, self.port))?;
        let len = match &body {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        };
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Length: {len}\r\nConnection: close\r\nUser-Agent: ffs-publish\r\n",
            self.token
        );
        if !ctype.is_empty() {
            head.push_str(&format!("Content-Type: {ctype}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await?;
        // A server that answers early (and closes) makes the write fail: the answer is
        // still read below.
        let sent: std::io::Result<()> = async {
            match body {
                Body::Empty => Ok(()),
                Body::Bytes(b) => s.write_all(b).await,
                Body::File {
                    path,
                    offset,
                    len,
                    bar,
                } => {
                    let mut f = std::fs::File::open(path)?;
                    f.seek(std::io::SeekFrom::Start(offset))?;
                    let mut left = len;
                    let mut buf = vec![0u8; 1 << 20];
                    while left > 0 {
                        let want = left.min(buf.len() as u64) as usize;
                        let n = f.read(&mut buf[..want])?;
                        if n == 0 {
                            return Err(std::io::Error::other(format!(
                                "{} shrank while being published",
                                path.display()
                            )));
                        }
                        s.write_all(&buf[..n]).await?;
                        left -= n as u64;
                        bar.inc(n as u64);
                    }
                    Ok(())
                }
            }
        }
        .await;
        let _ = s.flush().await;
        let mut raw = Vec::new();
        match s.read_to_end(&mut raw).await {
            Ok(_) => {}
            // Peers that close without close_notify: what arrived is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => {
                sent.context("sending the request")?;
                return Err(e).context("reading the answer");
            }
        }
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            sent.context("sending the request")?;
            bail!("the stager sent no HTTP answer");
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .context("bad HTTP status line")?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(Resp {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        })
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
    let ca = a
        .ca_cert
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let trust = match &a.pin {
        Some(p) => Trust::Pin(parse_pin(p)?),
        None => Trust::Ca(&ca),
    };
    let remote = Remote::new(url, token, trust)?;
    let paths2 = paths.to_vec();
    let inputs = tokio::task::spawn_blocking(
        move || -> anyhow::Result<Vec<(ftp_stager::publish::Input, String)>> {
            let inputs = ftp_stager::publish::collect_inputs(&paths2)?;
            inputs
                .into_iter()
                .map(|i| {
                    let sha = sha256_file(&i.source)?;
                    Ok((i, sha))
                })
                .collect()
        },
    )
    .await??;
    if inputs.is_empty() {
        bail!("the inputs hold no files");
    }

    // What does the stager lack?
    let mut todo = Vec::new();
    let mut skipped = 0usize;
    for (i, sha) in &inputs {
        let r = remote
            .request(
                "GET",
                &format!("/publish/v1/objects/{sha}"),
                "",
                Body::Empty,
            )
            .await?;
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
    let to_send: u64 = todo.iter().map(|(i, _, have)| i.size - have).sum();
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
            let r = remote
                .request(
                    "PUT",
                    &format!("/publish/v1/objects/{sha}?offset={offset}&size={}", i.size),
                    "application/octet-stream",
                    Body::File {
                        path: &i.source,
                        offset,
                        len: i.size - offset,
                        bar: &bar,
                    },
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
                Ok(r) if r.status == 429 => {
                    // The token's other uploads (another pipeline) hold every slot.
                    let secs: u64 = r
                        .header("Retry-After")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(5)
                        .clamp(1, 60);
                    bar.suspend(|| {
                        eprintln!(
                            "{}: the stager is busy ({}); retrying in {secs} s",
                            i.name,
                            r.text()
                        )
                    });
                    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                }
                other => {
                    tries += 1;
                    if tries > 3 {
                        match other {
                            Ok(r) => {
                                bail!("{}: the stager answered {}: {}", i.name, r.status, r.text())
                            }
                            Err(e) => return Err(e.context(format!("uploading {}", i.name))),
                        }
                    }
                    // Ask where to resume.
                    let s = remote
                        .request(
                            "GET",
                            &format!("/publish/v1/objects/{sha}"),
                            "",
                            Body::Empty,
                        )
                        .await?;
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
    bar.finish_and_clear();

    let files: Vec<serde_json::Value> = inputs
        .iter()
        .map(|(i, sha)| serde_json::json!({"name": i.name, "size": i.size, "sha256": sha}))
        .collect();
    let body = serde_json::json!({"notes": notes, "files": files}).to_string();
    let r = remote
        .request(
            "POST",
            &format!("/publish/v1/releases/{product}/{version}"),
            "application/json",
            Body::Bytes(body.as_bytes()),
        )
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
