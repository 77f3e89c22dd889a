//! The web's link carriers set up to be measured (`ffs bench commlink`'s https and "relay
//! via the web" rows; the commlink crate cannot start the web): the real web frontend
//! (actix, rustls) on a loopback HTTPS listener with a self-signed certificate, and an echo
//! responder dialing out to it with the certificate pinned, either over
//! [`commlink::transport::Https`] (the [`LinkEndpoint`], which takes the upgraded TLS
//! stream out of actix; directly or through a `CONNECT` proxy) or over the HTTP relay
//! (`relay+https://`, the web's relay endpoint; the responder on a thread of its own, as
//! `ffs agent` runs it). Requests go through the accepting [`Client`]. Nothing is measured
//! or drawn here.

use std::sync::Arc;
use std::time::Duration;

use commlink::transport::{Https, Trust, parse_pin};
use commlink::{Client, KeyBag, LinkConfig, Tobj};

use crate::link_endpoint::LinkEndpoint;
use crate::{Application, Listeners, WebConfig};

/// Why the bed could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CarrierBedError {
    /// A step failed (named).
    #[error("{what}: {why}")]
    Setup {
        /// What was being done.
        what: &'static str,
        /// The cause.
        why: String,
    },
    /// The link did not come up in time.
    #[error("the measured link to the web on port {0} did not come up within 20 s")]
    NotUp(u16),
}

fn setup(what: &'static str) -> impl FnOnce(String) -> CarrierBedError {
    move |why| CarrierBedError::Setup { what, why }
}

/// Answers every request with itself.
struct Echo;

impl commlink::Service for Echo {
    async fn call(&self, request: Tobj) -> Tobj {
        request
    }
}

/// A running web with the https carrier endpoint and an echo responder linked to it;
/// stopped when dropped.
pub struct CarrierBed {
    /// The client whose requests cross the carrier (the web's end).
    pub client: Client,
    /// The web's HTTPS port.
    pub port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for CarrierBed {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

const PREFIX: &str = "/ffs-link";

/// Which of the web's link endpoints the bed measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BedCarrier {
    /// The https carrier (a WebSocket upgrade on the HTTPS listener).
    Https,
    /// The HTTP relay (`POST …/v1/relay/…` on the HTTPS listener).
    Relay,
}

impl CarrierBed {
    /// Starts the web on 127.0.0.1:`port` (0: any free port) and the echo responder
    /// dialing it over the https carrier through `proxy` (an `http://host:port` forward
    /// proxy that allows `CONNECT` to that port) or directly; returns once the link is up.
    pub async fn start(port: u16, proxy: Option<&str>) -> Result<CarrierBed, CarrierBedError> {
        CarrierBed::start_with(BedCarrier::Https, port, proxy).await
    }

    /// [`CarrierBed::start`] over `carrier`. For the relay, `proxy` is a forward proxy
    /// that allows `CONNECT` to the port (the relay's requests go inside TLS).
    pub async fn start_with(
        carrier: BedCarrier,
        port: u16,
        proxy: Option<&str>,
    ) -> Result<CarrierBed, CarrierBedError> {
        let dir = tempfile::tempdir().map_err(|e| setup("a temporary directory")(e.to_string()))?;
        let bag = KeyBag::generate(128).map_err(|e| setup("a key bag")(e.to_string()))?;
        let mut link = LinkConfig::new(Arc::new(bag));
        link.request_timeout = Duration::from_secs(30);
        link.connect_timeout = Duration::from_secs(5);
        let mut cfg = WebConfig {
            listen: format!("127.0.0.1:{port}"),
            workers: 2,
            ..WebConfig::default()
        };
        cfg.resolve_paths(dir.path());
        // The pages' own back ends are never reached: clients that wait for a dial-in
        // which never comes (the measured link has its own acceptor).
        let (agent, _) = Client::accepting(link.clone());
        let (stager, _) = Client::accepting(link.clone());
        let (client, acceptor) = Client::accepting(link.clone());
        let (relay, endpoint) = match carrier {
            BedCarrier::Https => (None, Some(LinkEndpoint::new(acceptor, PREFIX, 4))),
            BedCarrier::Relay => (
                Some(crate::relay::Relay::new(
                    acceptor,
                    commlink::RelayLimits::default(),
                    PREFIX,
                )),
                None,
            ),
        };
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| setup("binding the web's HTTPS listener")(e.to_string()))?;
        let app = Application::build_with_carriers(
            cfg,
            vec![agent],
            vec![crate::backend::StagerPeer::new("stager", "", stager)],
            Listeners {
                https: listener,
                http_redirect: None,
            },
            relay,
            endpoint,
        )
        .map_err(|e| setup("starting the web")(e.to_string()))?;
        let port = app.port();
        let pin = parse_pin(app.fingerprint())
            .map_err(|e| setup("the web's certificate fingerprint")(e.to_string()))?;
        let web = tokio::spawn(async move {
            if let Err(e) = app.run_until(std::future::pending()).await {
                tracing::error!("the measured web stopped: {e}");
            }
        });
        let echo = match carrier {
            BedCarrier::Https => {
                let carrier = Https::new(
                    &format!("https://127.0.0.1:{port}{PREFIX}"),
                    &Trust::Pin(pin),
                    proxy,
                )
                .map_err(|e| setup("the https carrier")(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = commlink::serve_dialout_via(
                        carrier,
                        link,
                        Arc::new(Echo),
                        std::future::pending(),
                    )
                    .await;
                })
            }
            BedCarrier::Relay => {
                let relay = commlink::Relay::new(
                    &format!("relay+https://127.0.0.1:{port}{PREFIX}"),
                    commlink::RelayOptions {
                        proxy: proxy.map(str::to_owned),
                        trust: Trust::Pin(pin),
                        ..commlink::RelayOptions::default()
                    },
                )
                .map_err(|e| setup("the relay carrier")(e.to_string()))?;
                // As `ffs agent` runs it: the relay's link on a thread of its own.
                tokio::spawn(async move {
                    let _ = commlink::serve_dialout_on_own_thread(
                        relay,
                        link,
                        Arc::new(Echo),
                        std::future::pending(),
                    )
                    .await;
                })
            }
        };
        let bed = CarrierBed {
            client,
            port,
            tasks: vec![web, echo],
            _dir: dir,
        };
        if !bed.client.wait_up(Duration::from_secs(20)).await {
            return Err(CarrierBedError::NotUp(port));
        }
        Ok(bed)
    }
}
