//! FTP (and explicit FTPS) over libunftp: each login sees only its own area as `/`,
//! read-only.
//!
//! - [`AreaAuthenticator`] checks the one-time credentials against the [`Stager`].
//! - [`AreaUser`] carries the area directory as the session's home.
//! - [`AreaFs`] wraps `unftp-sbe-fs`'s `Filesystem`: it forwards `enter` (so the session is
//!   re-rooted at the area — the stock restrict/rooter wrappers drop it), refuses every
//!   write, and sends RETR over a plain data connection with `sendfile(2)` (over FTPS, in
//!   paced pieces).
//! - [`DeliveryRecorder`] turns completed RETRs into deliveries.

use std::fmt::{self, Debug, Display};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use libunftp::notification::{DataEvent, DataListener, EventMeta};
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};
use unftp_core::storage::{
    Error, ErrorKind, Fileinfo, Metadata, Permissions, Result, StorageBackend,
};
use unftp_sbe_fs::{Filesystem, Meta};

use crate::staging::Stager;

/// Read buffer of the `get` path (a reader handed to libunftp; RETR itself goes through
/// `get_into`, which reads paced pieces instead).
const READ_BUF: usize = 32 << 10;

/// An authenticated FTP session's user: the area it may see.
#[derive(Debug, Clone)]
pub struct AreaUser {
    /// The one-time user name.
    pub username: String,
    /// The area id.
    pub area_id: String,
    /// The area directory (absolute, under the areas dir).
    pub home: PathBuf,
}

impl Display for AreaUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.username)
    }
}

impl UserDetail for AreaUser {
    fn home(&self) -> Option<&Path> {
        Some(&self.home)
    }
}

/// Checks FTP logins against the stager's live areas.
#[derive(Debug)]
pub struct AreaAuthenticator {
    stager: Arc<Stager>,
}

impl AreaAuthenticator {
    /// Over `stager`.
    pub fn new(stager: Arc<Stager>) -> Self {
        AreaAuthenticator { stager }
    }
}

#[async_trait]
impl Authenticator for AreaAuthenticator {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> std::result::Result<Principal, AuthenticationError> {
        let Some(pw) = creds.password.as_deref() else {
            return Err(AuthenticationError::BadPassword);
        };
        match self.stager.ftp_login(username, pw) {
            Some(_) => Ok(Principal {
                username: username.to_owned(),
            }),
            None => {
                tracing::info!(user = username, ip = %creds.source_ip, "FTP login refused");
                Err(AuthenticationError::BadPassword)
            }
        }
    }
}

/// Maps an authenticated principal to its area.
#[derive(Debug)]
pub struct AreaUserProvider {
    stager: Arc<Stager>,
}

impl AreaUserProvider {
    /// Over `stager`.
    pub fn new(stager: Arc<Stager>) -> Self {
        AreaUserProvider { stager }
    }
}

#[async_trait]
impl UserDetailProvider for AreaUserProvider {
    type User = AreaUser;

    async fn provide_user_detail(
        &self,
        principal: &Principal,
    ) -> std::result::Result<AreaUser, UserDetailError> {
        let r = self
            .stager
            .area_of_user(&principal.username)
            .ok_or_else(|| UserDetailError::UserNotFound {
                username: principal.username.clone(),
            })?;
        Ok(AreaUser {
            username: principal.username.clone(),
            home: self.stager.areas_dir().join(&r.id),
            area_id: r.id,
        })
    }
}

/// Read-only storage confined to the session's area.
#[derive(Debug)]
pub struct AreaFs {
    inner: Option<Filesystem>,
    area: Option<Arc<cap_std::fs::Dir>>,
}

impl AreaFs {
    /// A backend rooted at the areas directory; `enter` narrows it to one area.
    pub fn new(areas_dir: &Path) -> std::io::Result<Self> {
        Ok(AreaFs {
            inner: Some(Filesystem::new(areas_dir)?),
            area: None,
        })
    }

    /// A backend that refuses everything (when the areas directory cannot be opened).
    fn broken() -> Self {
        AreaFs {
            inner: None,
            area: None,
        }
    }

    fn inner(&self) -> Result<&Filesystem> {
        self.inner
            .as_ref()
            .ok_or_else(|| Error::from(ErrorKind::LocalError))
    }
}

fn refuse<T>() -> Result<T> {
    Err(Error::from(ErrorKind::PermissionDenied))
}

fn relative(path: &Path) -> PathBuf {
    let p = path.strip_prefix("/").unwrap_or(path);
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p.to_path_buf()
    }
}

/// File metadata as an area shows it: the file system's, except the hard-link count,
/// which is always 1. A staged file is a hard link shared by every live area holding it,
/// across customers, so its real count would let one customer watch others' staging.
#[derive(Debug)]
pub struct AreaMeta(Meta);

impl Metadata for AreaMeta {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn is_dir(&self) -> bool {
        self.0.is_dir()
    }
    fn is_file(&self) -> bool {
        self.0.is_file()
    }
    fn is_symlink(&self) -> bool {
        self.0.is_symlink()
    }
    fn modified(&self) -> Result<std::time::SystemTime> {
        self.0.modified()
    }
    fn gid(&self) -> u32 {
        self.0.gid()
    }
    fn uid(&self) -> u32 {
        self.0.uid()
    }
    fn links(&self) -> u64 {
        1
    }
    fn permissions(&self) -> Permissions {
        self.0.permissions()
    }
    fn readlink(&self) -> Option<&Path> {
        self.0.readlink()
    }
}

#[async_trait]
impl StorageBackend<AreaUser> for AreaFs {
    type Metadata = AreaMeta;

    fn enter(&mut self, user: &AreaUser) -> std::io::Result<()> {
        // Re-root the inner backend (listing, metadata, cwd) and keep our own handle on the
        // area for reads. Both use cap-std: `..`, absolute paths and symlinks that leave the
        // area are refused by the kernel-assisted resolver.
        let inner = self
            .inner
            .as_mut()
            .ok_or_else(|| std::io::Error::other("areas directory unavailable"))?;
        StorageBackend::<AreaUser>::enter(inner, user)?;
        let aa = cap_std::ambient_authority();
        self.area = Some(Arc::new(cap_std::fs::Dir::open_ambient_dir(
            &user.home, aa,
        )?));
        Ok(())
    }

    fn supported_features(&self) -> u32 {
        unftp_core::storage::FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &AreaUser,
        path: P,
    ) -> Result<AreaMeta> {
        self.inner()?.metadata(user, path).await.map(AreaMeta)
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &AreaUser,
        path: P,
    ) -> Result<Vec<Fileinfo<PathBuf, AreaMeta>>> {
        let inner = self.inner()?;
        // A file's listing is that file (RFC 959 LIST/STAT of a file pathname, as vsftpd
        // answers); the file-system back-end only lists directories.
        let meta = inner.metadata(user, path.as_ref()).await?;
        if meta.is_file() {
            return Ok(vec![Fileinfo {
                path: path.as_ref().to_path_buf(),
                metadata: AreaMeta(meta),
            }]);
        }
        let list = inner.list(user, path).await?;
        Ok(list
            .into_iter()
            .map(|f| Fileinfo {
                path: f.path,
                metadata: AreaMeta(f.metadata),
            })
            .collect())
    }

    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &AreaUser,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> Result<u64>
    where
        W: tokio::io::AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        let file = self.open(user, path.as_ref()).await?;
        Ok(paced_copy(file, start_pos, output).await?)
    }

    async fn get_into_socket<P>(
        &self,
        user: &AreaUser,
        path: P,
        start_pos: u64,
        socket: &mut tokio::net::TcpStream,
    ) -> Result<u64>
    where
        P: AsRef<Path> + Send + Debug,
    {
        let file = self.open(user, path.as_ref()).await?;
        Ok(send_file(file, start_pos, socket).await?)
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &AreaUser,
        path: P,
        start_pos: u64,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        use tokio::io::AsyncSeekExt as _;
        let mut f = tokio::fs::File::from_std(self.open(user, path.as_ref()).await?);
        if start_pos > 0 {
            f.seek(std::io::SeekFrom::Start(start_pos)).await?;
        }
        Ok(Box::new(tokio::io::BufReader::with_capacity(READ_BUF, f)))
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        _user: &AreaUser,
        _input: R,
        _path: P,
        _start_pos: u64,
    ) -> Result<u64> {
        refuse()
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, _user: &AreaUser, _path: P) -> Result<()> {
        refuse()
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, _user: &AreaUser, _path: P) -> Result<()> {
        refuse()
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &AreaUser,
        _from: P,
        _to: P,
    ) -> Result<()> {
        refuse()
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, _user: &AreaUser, _path: P) -> Result<()> {
        refuse()
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &AreaUser, path: P) -> Result<()> {
        self.inner()?.cwd(user, path).await
    }
}

impl AreaFs {
    async fn open(&self, _user: &AreaUser, path: &Path) -> Result<std::fs::File> {
        let Some(dir) = self.area.clone() else {
            return refuse();
        };
        let rel = relative(path);
        let f = tokio::task::spawn_blocking(move || dir.open(rel))
            .await
            .map_err(|e| Error::new(ErrorKind::LocalError, e))??;
        Ok(f.into_std())
    }
}

/// Most one `sendfile(2)` call is asked to send (the socket's free buffer space bounds
/// what it sends, and so how much a page-cache miss makes it read from disk at once).
const SENDFILE_MAX: u64 = 4 << 20;

/// RETR over a plain data connection (vsftpd's way): the kernel sends `file` from `start`
/// to its end into `socket` with `sendfile(2)` whenever the socket can take more, with no
/// copy through user space and no buffer held per transfer, however slow the client. A
/// file system that cannot (`EINVAL`/`ENOSYS` before anything was sent) gets
/// [`paced_copy`]. Returns the bytes sent.
async fn send_file(
    file: std::fs::File,
    start: u64,
    socket: &mut tokio::net::TcpStream,
) -> std::io::Result<u64> {
    use std::os::fd::AsFd as _;
    let len = file.metadata()?.len();
    let mut off = i64::try_from(start)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "offset too large"))?;
    // Read ahead for a sequential pass (a hint: failure changes nothing).
    let _ = nix::fcntl::posix_fadvise(
        file.as_fd(),
        off,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
    loop {
        let at = u64::try_from(off).unwrap_or(u64::MAX);
        let left = len.saturating_sub(at);
        if left == 0 {
            break;
        }
        let count = usize::try_from(left.min(SENDFILE_MAX)).unwrap_or(usize::MAX);
        let sent = socket
            .async_io(tokio::io::Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile64(socket.as_fd(), file.as_fd(), Some(&mut off), count)
                    .map_err(std::io::Error::from)
            })
            .await;
        match sent {
            // The file ended early (it is never cut in place; a race with a yank).
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if at == start
                    && matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) =>
            {
                tracing::debug!(error = %e, "sendfile refused; RETR copies through user space");
                return paced_copy(file, start, socket).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(u64::try_from(off).unwrap_or(u64::MAX) - start)
}

/// RETR's copy: `file` from `start` to its end into `output`, in pieces sized by
/// [`Pace`](crate::pace::Pace) from how soon the client took the last one (the time its
/// write took), read into one buffer: on this thread what the page cache holds
/// ([`crate::fsutil::read_cached_at`]), else with `pread` off the I/O thread. A slow
/// client's transfer holds one small piece; a fast one's grows to large pieces. Returns
/// the bytes written.
async fn paced_copy<W>(file: std::fs::File, start: u64, output: &mut W) -> std::io::Result<u64>
where
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::AsyncWriteExt as _;
    let file = Arc::new(file);
    let mut pace = crate::pace::Pace::new();
    let mut took = None;
    let mut at = start;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let now = std::time::Instant::now();
        let n = usize::try_from(pace.next(took, now)).unwrap_or(usize::MAX);
        if buf.capacity() > 2 * n {
            // A slowed client gives back what its larger pieces held.
            buf = Vec::new();
        }
        buf.resize(n, 0);
        // What the page cache holds is read right here; only a cold read goes to the
        // blocking pool.
        let got = match crate::fsutil::read_cached_at(&file, &mut buf, at) {
            Some(got) => got,
            None => {
                let f = file.clone();
                let (b, got) = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt as _;
                    let mut b = buf;
                    let got = f.read_at(&mut b, at);
                    (b, got)
                })
                .await
                .map_err(std::io::Error::other)?;
                buf = b;
                got?
            }
        };
        if got == 0 {
            break;
        }
        let written = std::time::Instant::now();
        output.write_all(&buf[..got]).await?;
        took = Some(written.elapsed());
        at += got as u64;
    }
    output.flush().await?;
    Ok(at - start)
}

/// Records each completed RETR as a delivery.
#[derive(Debug)]
pub struct DeliveryRecorder {
    stager: Arc<Stager>,
    protocol: &'static str,
}

impl DeliveryRecorder {
    /// Over `stager`; `protocol` is what the log says (`ftp`).
    pub fn new(stager: Arc<Stager>, protocol: &'static str) -> Self {
        DeliveryRecorder { stager, protocol }
    }
}

#[async_trait]
impl DataListener for DeliveryRecorder {
    async fn receive_data_event(&self, e: DataEvent, m: EventMeta) {
        if let DataEvent::Got { path, bytes } = e {
            // Look the area up even if it expired mid-transfer: the bytes were delivered.
            let Some(area) = self.stager.area_of_user_any(&m.username) else {
                return;
            };
            let file = path.trim_start_matches('/').to_owned();
            let stager = self.stager.clone();
            let protocol = self.protocol;
            let _ = tokio::task::spawn_blocking(move || {
                stager.record_delivery(&area, &file, bytes, protocol)
            })
            .await;
        }
    }
}

/// Options for [`build_server`].
#[derive(Debug, Clone)]
pub struct FtpOptions {
    /// Passive data ports.
    pub passive_ports: std::ops::RangeInclusive<u16>,
    /// Certificate and key for explicit FTPS (AUTH TLS); `None` = plain FTP only.
    pub ftps: Option<(PathBuf, PathBuf)>,
    /// Address announced in PASV replies; `None` = the address the client connected to.
    pub passive_host: Option<std::net::Ipv4Addr>,
}

/// Builds a libunftp server over the stager's areas.
pub fn build_server(
    stager: &Arc<Stager>,
    opts: &FtpOptions,
) -> std::result::Result<libunftp::Server<AreaFs, AreaUser>, String> {
    let areas_dir = stager.areas_dir().to_path_buf();
    let provider: Arc<dyn UserDetailProvider<User = AreaUser> + Send + Sync> =
        Arc::new(AreaUserProvider::new(stager.clone()));
    let mut b = libunftp::ServerBuilder::with_user_detail_provider(
        Box::new(move || {
            AreaFs::new(&areas_dir).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot open the areas directory");
                AreaFs::broken()
            })
        }),
        provider,
    )
    .authenticator(Arc::new(AreaAuthenticator::new(stager.clone())))
    .greeting("ffs stager ready")
    .passive_ports(opts.passive_ports.clone())
    .notify_data(DeliveryRecorder::new(stager.clone(), "ftp"))
    .idle_session_timeout(600);
    if let Some(ip) = opts.passive_host {
        b = b.passive_host(libunftp::options::PassiveHost::Ip(ip));
    }
    if let Some((cert, key)) = &opts.ftps {
        b = b.ftps(cert.clone(), key.clone());
    }
    b.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes whose every byte depends on its offset.
    fn patterned(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect();
        let path = dir.join("f");
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    /// Sends `path` from `start` over a loopback connection with `send_file`; the reader
    /// pauses `pause` after each of its first reads, so the socket fills (sendfile meets
    /// `EAGAIN` and waits for room). Returns (bytes reported, bytes received).
    async fn send_over_loopback(
        path: &Path,
        start: u64,
        pause: std::time::Duration,
    ) -> (u64, Vec<u8>) {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0; 64 << 10];
            for _ in 0..20 {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
                tokio::time::sleep(pause).await;
            }
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let (mut sock, _) = listener.accept().await.unwrap();
        let file = std::fs::File::open(path).unwrap();
        let sent = send_file(file, start, &mut sock).await.unwrap();
        drop(sock);
        (sent, reader.await.unwrap())
    }

    #[tokio::test]
    async fn sendfile_sends_the_file_from_the_offset_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        // Past SENDFILE_MAX, so the transfer takes several calls.
        let (path, bytes) = patterned(dir.path(), 9 << 20 | 12_345);
        let (sent, got) = send_over_loopback(&path, 0, std::time::Duration::ZERO).await;
        assert_eq!(sent, bytes.len() as u64);
        assert!(got == bytes, "received bytes differ from the file");

        // REST then RETR: from an offset; a slow reader makes the socket fill.
        let start = 3 << 20 | 777;
        let (sent, got) =
            send_over_loopback(&path, start, std::time::Duration::from_millis(5)).await;
        assert_eq!(sent, (bytes.len() - start as usize) as u64);
        assert!(
            got == bytes[start as usize..],
            "received bytes differ from the file's tail"
        );

        // An offset at or past the end sends nothing.
        let (sent, got) =
            send_over_loopback(&path, bytes.len() as u64 + 5, std::time::Duration::ZERO).await;
        assert_eq!((sent, got.len()), (0, 0));
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("/")), PathBuf::from("."));
        assert_eq!(relative(Path::new("/a/b")), PathBuf::from("a/b"));
        assert_eq!(relative(Path::new("a")), PathBuf::from("a"));
    }
}
