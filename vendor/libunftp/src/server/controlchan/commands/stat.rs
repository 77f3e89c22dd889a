//! The RFC 959 Status (`STAT`) command
//
// This command shall cause a status response to be sent over
// the control connection in the form of a reply.  The command
// may be sent during a file transfer (along with the Telnet IP
// and Synch signals--see the Section on FTP Commands) in which
// case the server will respond with the status of the
// operation in progress, or it may be sent between file
// transfers.  In the latter case, the command may have an
// argument field.  If the argument is a pathname, the command
// is analogous to the "list" command except that data shall be
// transferred over the control connection.  If a partial
// pathname is given, the server may respond with a list of
// file names or attributes associated with that specification.
// If no argument is given, the server should return general
// status information about the server FTP process.  This
// should include current values of all transfer parameters and
// the status of connections.

use crate::{
    auth::UserDetail,
    server::{
        chancomms::ControlChanMsg,
        controlchan::{
            Reply, ReplyCode,
            error::ControlChanError,
            handler::{CommandContext, CommandHandler},
        },
    },
    storage::{ErrorKind, Metadata, StorageBackend},
};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;

#[derive(Debug)]
pub struct Stat {
    path: Option<Bytes>,
}

impl Stat {
    pub fn new(path: Option<Bytes>) -> Self {
        Stat { path }
    }
}

#[async_trait]
impl<Storage, User> CommandHandler<Storage, User> for Stat
where
    User: UserDetail,
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: 'static + Metadata,
{
    #[tracing_attributes::instrument]
    async fn handle(&self, args: CommandContext<Storage, User>) -> Result<Reply, ControlChanError> {
        match self.path.clone() {
            None => {
                let session = args.session.lock().await;
                let text: Vec<String> = vec![
                    // No server software, back-end or authenticator names: they only help an
                    // attacker pick exploits.
                    "server status:".to_string(),
                    format!("user: {}", session.username.as_deref().unwrap_or("")),
                    format!("client addr: {}", session.source),
                    format!("ftps configured: {}", args.tls_configured),
                    format!("cmd channel in tls mode: {}", session.cmd_tls),
                    format!("data channel in tls mode: {}", session.data_tls),
                    format!("cwd: {}", session.cwd.to_string_lossy()),
                    format!("rename from path: {:?}", session.rename_from),
                    format!("offset for REST: {}", session.start_pos),
                ];
                Ok(Reply::new_multiline(ReplyCode::SystemStatus, text))
            }
            Some(path) => {
                let path: &str = std::str::from_utf8(&path)?;
                let path_str = path.to_string();
                let path = path.to_owned();

                let session = args.session.lock().await;
                let user = session.user.clone();
                let storage = Arc::clone(&session.storage);
                // Relative to the working directory, like LIST.
                let path = session.cwd.join(path);

                let tx_success: Sender<ControlChanMsg> = args.tx_control_chan.clone();
                let tx_fail: Sender<ControlChanMsg> = args.tx_control_chan.clone();
                let logger = args.logger;

                tokio::spawn(async move {
                    let user = (*user).as_ref().unwrap();
                    // RFC 959: 213 (file status) for a file, 212 (directory status) for a
                    // directory, the listing between a first and a last line; a path that is
                    // not there lists nothing (213 with no entries, as vsftpd answers; 550 is
                    // not a STAT reply in RFC 959); other failures keep their storage error.
                    let listed = match storage.metadata(user, &path).await {
                        Ok(meta) => {
                            let code = if meta.is_dir() { ReplyCode::DirectoryStatus } else { ReplyCode::FileStatus };
                            storage.list_vec(user, &path).await.map(|lines| (code, lines))
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::PermanentFileNotAvailable | ErrorKind::PermanentDirectoryNotAvailable) => {
                            Ok((ReplyCode::FileStatus, Vec::new()))
                        }
                        Err(e) => Err(e),
                    };
                    match listed {
                        Ok((code, lines)) => {
                            slog::info!(logger, "STAT: Successfully listed file or directory {:?}", path_str);
                            let text = std::iter::once("Status follows:".to_string())
                                .chain(lines)
                                .chain(std::iter::once("End of status".to_string()));
                            if let Err(err) = tx_success.send(ControlChanMsg::CommandChannelReply(Reply::new_multiline(code, text))).await {
                                slog::warn!(logger, "STAT: Could not send internal message to notify of STAT success: {}", err);
                            }
                        }
                        Err(e) => {
                            slog::info!(logger, "STAT: Failure listing file or directory {:?}", path_str);
                            if let Err(err) = tx_fail.send(ControlChanMsg::StorageError(e)).await {
                                slog::warn!(logger, "STAT: Could not send internal message to notify of STAT failure: {}", err);
                            }
                        }
                    }
                });
                Ok(Reply::none())
            }
        }
    }
}
