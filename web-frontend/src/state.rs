//! [`AppState`]: what every handler shares (config, back ends, metrics, throttle, revoked
//! sessions, the last good catalog).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, ReleaseInfo};
use crate::config::WebConfig;
use crate::metrics::Metrics;
use crate::session::{EndedCustomers, Revoked};
use crate::signing::SigningKeys;
use crate::throttle::LoginThrottle;

/// Shared by all workers.
pub struct AppState {
    /// The `[web]` settings.
    pub cfg: WebConfig,
    /// Agent and stager links.
    pub backend: Backend,
    /// Prometheus counters.
    pub metrics: Arc<Metrics>,
    /// Per-address failed-login counter.
    pub throttle: LoginThrottle,
    /// Session ids ended by logout.
    pub revoked: Revoked,
    /// Customers whose older sessions the agent ended (disabled; see `revocations`).
    pub ended: EndedCustomers,
    /// The last catalog the stager sent, with its time, shown when the stager is down.
    pub last_catalog: Mutex<Option<(String, Arc<Vec<ReleaseInfo>>)>>,
    /// The release-signing public keys (`[web] signing_public_keys`).
    pub signing_keys: SigningKeys,
    /// The HTTP relay endpoint for the db agent, when served.
    pub relay: Option<crate::relay::Relay>,
    /// The https carrier's endpoint for the db agent, when served.
    pub link: Option<crate::link_endpoint::LinkEndpoint>,
}

impl AppState {
    /// Builds the state around a back end.
    pub fn new(
        cfg: WebConfig,
        backend: Backend,
        metrics: Arc<Metrics>,
        signing_keys: SigningKeys,
    ) -> Self {
        let throttle = LoginThrottle::new(
            cfg.login_attempts,
            Duration::from_secs(cfg.login_window_secs.max(1)),
        );
        AppState {
            cfg,
            backend,
            metrics,
            throttle,
            revoked: Revoked::default(),
            ended: EndedCustomers::default(),
            last_catalog: Mutex::new(None),
            signing_keys,
            relay: None,
            link: None,
        }
    }
}
