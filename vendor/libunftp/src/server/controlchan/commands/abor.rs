//! The RFC 959 Abort (`ABOR`) command
//
// This command tells the server to abort the previous FTP
// service command and any associated transfer of data. The
// abort command may require "special action", as discussed in
// the Section on FTP Commands, to force recognition by the
// server.  No action is to be taken if the previous command
// has been completed (including data transfer).  The control
// connection is not to be closed by the server, but the data
// connection must be closed.

use crate::server::controlchan::{
    Reply, ReplyCode,
    error::ControlChanError,
    handler::{CommandContext, CommandHandler},
};
use async_trait::async_trait;
use tokio::sync::oneshot;
use unftp_core::auth::UserDetail;
use unftp_core::storage::{Metadata, StorageBackend};

#[derive(Debug)]
pub struct Abor;

#[async_trait]
impl<Storage, User> CommandHandler<Storage, User> for Abor
where
    Storage: StorageBackend<User> + 'static,
    Storage::Metadata: Metadata,
    User: UserDetail + 'static,
{
    // Replies 426 when a transfer was cut short (the control loop then adds the 226 that
    // completes the ABOR, RFC 959 §4.1.3), 226 when an idle data connection was closed, and
    // 225 when there was nothing to abort. It returns only once the data loop has stopped,
    // so that no reply of the transfer can come after the ABOR's.
    #[tracing_attributes::instrument]
    async fn handle(&self, args: CommandContext<Storage, User>) -> Result<Reply, ControlChanError> {
        // Take what we need and let go of the session: the data loop needs it to finish.
        let (abort_tx, data_loop_started, transfer_requested) = {
            let mut session = args.session.lock().await;
            let abort_tx = session.data_abort_tx.take();
            // The data loop takes the receiver when the data connection is made.
            let data_loop_started = session.data_abort_rx.take().is_none();
            // RETR, LIST and the like take the command sender when they reply 1xx.
            let transfer_requested = abort_tx.is_some() && session.data_cmd_tx.take().is_none();
            session.data_cmd_rx = None;
            (abort_tx, data_loop_started, transfer_requested)
        };
        let Some(abort_tx) = abort_tx else {
            return Ok(Reply::new(ReplyCode::DataConnectionOpen, "No transfer to abort"));
        };
        // Some(true): a transfer was cut short; Some(false): an idle data connection was
        // closed; None: there was nothing to abort.
        let outcome = if data_loop_started {
            let (ack_tx, ack_rx) = oneshot::channel();
            match abort_tx.send(ack_tx).await {
                Ok(()) => match ack_rx.await {
                    Ok(cut) => Some(cut || transfer_requested),
                    // The data loop ended by itself; its reply is already queued.
                    Err(_) => None,
                },
                Err(_) => None,
            }
        } else if transfer_requested {
            // No data connection yet; a pending one is refused when it arrives, as the
            // receivers above are gone.
            Some(true)
        } else {
            None
        };
        Ok(match outcome {
            Some(true) => Reply::new(ReplyCode::ConnectionClosed, "Transfer aborted; data connection closed"),
            Some(false) => Reply::new(ReplyCode::ClosingDataConnection, "Data connection closed"),
            None => Reply::new(ReplyCode::DataConnectionOpen, "No transfer to abort"),
        })
    }
}
