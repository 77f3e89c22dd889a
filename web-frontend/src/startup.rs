//! [`Application`]: builds the HTTPS server (and the optional HTTP→HTTPS redirector) around
//! already-bound listeners and commlink clients, so `ffs web`, `ffs demo` and tests all start
//! it the same way.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_session::SessionMiddleware;
use actix_session::config::{BrowserSession, CookieContentSecurity};
use actix_session::storage::CookieSessionStore;
use actix_web::body::MessageBody;
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use commlink::{Client, LinkConfig};

use crate::backend::{Backend, StagerPeer};
use crate::config::{AgentMode, WebConfig};
use crate::deliveries::Forwarder;
use crate::error::{AppError, StartError};
use crate::metrics::Metrics;
use crate::revocations::Revoker;
use crate::state::AppState;
use crate::{routes, secrets};

/// The content security policy: no inline script or style, nothing framed, forms only here.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Already-bound sockets for the web server.
pub struct Listeners {
    /// The HTTPS listener.
    pub https: TcpListener,
    /// The optional plain-HTTP listener that only redirects.
    pub http_redirect: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses in the config.
    pub fn bind(cfg: &WebConfig) -> Result<Listeners, StartError> {
        let bind = |addr: &str| {
            TcpListener::bind(addr).map_err(|source| StartError::Bind {
                addr: addr.to_string(),
                source,
            })
        };
        Ok(Listeners {
            https: bind(&cfg.listen)?,
            http_redirect: if cfg.http_redirect_listen.trim().is_empty() {
                None
            } else {
                Some(bind(&cfg.http_redirect_listen)?)
            },
        })
    }
}

/// A built (and listening) web frontend.
pub struct Application {
    server: Server,
    redirect: Option<Server>,
    port: u16,
    http_port: Option<u16>,
    fingerprint: String,
    forwarder: Forwarder,
    revoker: Revoker,
}

/// A link address from the config (`tcp://host:port` or `host:port`).
fn link_addr(key: &'static str, value: &str) -> Result<commlink::LinkAddr, StartError> {
    commlink::LinkAddr::parse(value)
        .and_then(|a| a.tcp_only(value))
        .map_err(|source| StartError::Address { key, source })
}

/// The agent client as the config says: dial (the first of) `agent_addr`, or listen on
/// `agent_listen` and wait for agents to dial out. Must be called inside a Tokio runtime.
pub async fn agent_client(cfg: &WebConfig, link: LinkConfig) -> Result<Client, StartError> {
    let mut all = agent_clients(cfg, link).await?;
    Ok(all.swap_remove(0))
}

/// The agent clients as the config says: one dialing each `db_agent_addr` (at least one),
/// or one listening on `agent_listen` that every dialing agent joins. Must be called inside
/// a Tokio runtime.
pub async fn agent_clients(cfg: &WebConfig, link: LinkConfig) -> Result<Vec<Client>, StartError> {
    Ok(match cfg.agent_mode {
        AgentMode::Connect => {
            let mut addrs = cfg.agent_addrs();
            if addrs.is_empty() {
                // Refused by LinkAddr with a message naming the setting.
                addrs.push("");
            }
            let mut clients = Vec::new();
            for a in addrs {
                let addr = link_addr("db_agent_addr", a)?;
                clients.push(Client::dial(addr.host_port().to_owned(), link.clone()));
            }
            clients
        }
        AgentMode::Accept => {
            let l = bind_agent_listener(cfg).await?;
            tracing::info!(addr = %cfg.agent_listen, "waiting for the db agent to dial in");
            vec![Client::accept(l, link)]
        }
    })
}

/// The listener db agents dial in to (`db_agent_listen`).
async fn bind_agent_listener(cfg: &WebConfig) -> Result<tokio::net::TcpListener, StartError> {
    let addr = link_addr("db_agent_listen", &cfg.agent_listen)?;
    tokio::net::TcpListener::bind(addr.host_port())
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.agent_listen.clone(),
            source,
        })
}

/// The one stager of `stager_addr` around an existing client (named after its address,
/// deliveries keyed `""`).
fn single_stager(cfg: &WebConfig, client: Client) -> StagerPeer {
    StagerPeer::new(cfg.stager_addr.clone(), "", client)
}

/// A dialing client for each configured stager (`stagers`, or the one `stager_addr`).
pub fn stager_peers(cfg: &WebConfig, link: LinkConfig) -> Result<Vec<StagerPeer>, StartError> {
    let key = if cfg.stagers.is_empty() {
        "stager_addr"
    } else {
        "stagers"
    };
    cfg.stager_list()
        .into_iter()
        .map(|s| {
            let addr = link_addr(key, &s.addr)?;
            let client = Client::dial(addr.host_port().to_owned(), link.clone());
            Ok(StagerPeer::new(s.name, s.delivery_key, client))
        })
        .collect()
}

impl Application {
    /// Everything from the config: binds the listeners, creates both commlink clients and
    /// builds the server (what `ffs web` runs). Must be called inside a Tokio runtime.
    pub async fn from_config(cfg: WebConfig, link: LinkConfig) -> Result<Application, StartError> {
        let listeners = Listeners::bind(&cfg)?;
        let stagers = stager_peers(&cfg, link.clone())?;
        let prefix = cfg.link_prefix().map_err(StartError::LinkPath)?;
        let (agents, carried) = match (cfg.agent_mode, prefix) {
            (AgentMode::Accept, Some(prefix)) => {
                // The carriers' endpoints hand their streams to the same accepting client
                // as the raw TCP listener.
                let l = bind_agent_listener(&cfg).await?;
                tracing::info!(addr = %cfg.agent_listen, %prefix, "waiting for the db agent to dial in (raw TCP, or the carriers under the prefix)");
                let (client, acceptor) = Client::accept_and_carry(l, link.clone());
                // The HTTP relay's attachments (PREFIX/v1/relay/…) go there too.
                let relay = crate::relay::Relay::new(
                    acceptor.clone(),
                    commlink::RelayLimits::default(),
                    &prefix,
                );
                let endpoint = crate::link_endpoint::LinkEndpoint::new(
                    acceptor,
                    &prefix,
                    cfg.link_max_per_address,
                );
                (vec![client], Some((endpoint, relay)))
            }
            (AgentMode::Connect, Some(_)) => {
                tracing::warn!(
                    "[web] link_path is set but db_agent_mode = \"connect\": no carrier endpoint is served"
                );
                (agent_clients(&cfg, link.clone()).await?, None)
            }
            (_, None) => (agent_clients(&cfg, link.clone()).await?, None),
        };
        let (link, relay) = carried.map_or((None, None), |(l, r)| (Some(l), Some(r)));
        Application::build_with_carriers(cfg, agents, stagers, listeners, relay, link)
    }

    /// Builds the server around bound listeners and the two clients (tests and `ffs demo`
    /// bind port 0). Loads or generates the TLS identity and the session key. Must be called
    /// inside a Tokio runtime; serving starts with [`Application::run_until`].
    pub fn build(
        cfg: WebConfig,
        agent: Client,
        stager: Client,
        listeners: Listeners,
    ) -> Result<Application, StartError> {
        let stagers = vec![single_stager(&cfg, stager)];
        Application::build_with(cfg, vec![agent], stagers, listeners)
    }

    /// [`Application::build`] with several agent clients (one per dialed agent) and
    /// several stagers.
    pub fn build_with(
        cfg: WebConfig,
        agents: Vec<Client>,
        stagers: Vec<StagerPeer>,
        listeners: Listeners,
    ) -> Result<Application, StartError> {
        Application::build_with_relay(cfg, agents, stagers, listeners, None)
    }

    /// [`Application::build_with`], also serving the db agent's HTTP relay
    /// ([`crate::relay`]) on both listeners, its attachments handed to an agent client's
    /// acceptor.
    pub fn build_with_relay(
        cfg: WebConfig,
        agents: Vec<Client>,
        stagers: Vec<StagerPeer>,
        listeners: Listeners,
        relay: Option<crate::relay::Relay>,
    ) -> Result<Application, StartError> {
        Application::build_with_carriers(cfg, agents, stagers, listeners, relay, None)
    }

    /// [`Application::build_with_relay`], also serving the https carrier's endpoint
    /// ([`crate::link_endpoint`]) on the HTTPS listener.
    pub fn build_with_carriers(
        cfg: WebConfig,
        agents: Vec<Client>,
        stagers: Vec<StagerPeer>,
        listeners: Listeners,
        relay: Option<crate::relay::Relay>,
        link: Option<crate::link_endpoint::LinkEndpoint>,
    ) -> Result<Application, StartError> {
        cfg.link_prefix().map_err(StartError::LinkPath)?;
        let relay_http = relay.clone();
        let identity = commlink::tls::load_or_generate(
            &cfg.tls_cert,
            &cfg.tls_key,
            cfg.tls_generate.then_some(cfg.tls_names.as_slice()),
        )?;
        if identity.generated {
            tracing::info!(fingerprint = %identity.fingerprint, "self-signed certificate generated");
        }
        let port = local_port(&listeners.https)?;
        let http_port = match &listeners.http_redirect {
            Some(l) => Some(local_port(l)?),
            None => None,
        };
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.workers
        };
        let public_host = cfg.public_host.clone();
        let (state, key) = build_state_relay(cfg, agents, stagers, relay, link)?;
        let forwarder = Forwarder::new(
            state.backend.clone(),
            state.metrics.clone(),
            Duration::from_secs(state.cfg.delivery_poll_secs.max(1)),
        );
        let revoker = Revoker::new(
            state.clone(),
            Duration::from_secs(state.cfg.revocation_poll_secs.max(1)),
        );
        // TCP_NODELAY, as nginx does on keep-alive connections: a response (or a relay
        // line) leaves in more than one write (head, body, TLS records); with Nagle a later
        // small write waits for the ACK of the first, which the client may delay.
        let server = HttpServer::new(move || app(state.clone(), key.clone()))
            .workers(workers)
            .tcp_nodelay(true)
            .disable_signals()
            .shutdown_timeout(5)
            .listen_rustls_0_23(listeners.https, (*identity.server_config).clone())
            .map_err(|source| StartError::Bind {
                addr: format!("port {port}"),
                source,
            })?
            .run();
        let redirect = match listeners.http_redirect {
            Some(l) => Some(
                HttpServer::new(move || {
                    let host = public_host.clone();
                    let relay = relay_http.clone();
                    App::new()
                        .app_data(web::Data::new(RedirectTarget { host, port }))
                        .configure(|c| crate::relay::configure(c, relay.as_ref()))
                        .default_service(web::to(redirect_to_https))
                        .wrap(actix_web::middleware::from_fn(crate::body::read_first))
                })
                .workers(1)
                .tcp_nodelay(true)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(l)
                .map_err(|source| StartError::Bind {
                    addr: format!("port {}", http_port.unwrap_or(0)),
                    source,
                })?
                .run(),
            ),
            None => None,
        };
        Ok(Application {
            server,
            redirect,
            port,
            http_port,
            fingerprint: identity.fingerprint,
            forwarder,
            revoker,
        })
    }

    /// The HTTPS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The plain-HTTP redirect port, if any.
    pub fn http_port(&self) -> Option<u16> {
        self.http_port
    }

    /// SHA-256 fingerprint of the server certificate, `AB:CD:…`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A handle that stops the HTTPS server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until `shutdown` completes (or the server stops), then stops gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let redirect_handle = self.redirect.as_ref().map(Server::handle);
        let fwd = tokio::spawn(self.forwarder.run());
        let revoker = tokio::spawn(self.revoker.run());
        let redirect = self.redirect;
        let redirect_task = redirect.map(tokio::spawn);
        let server = self.server;
        tokio::pin!(server);
        let r = tokio::select! {
            r = &mut server => r,
            () = shutdown => {
                // The server future handles the stop command itself, so it must be polled
                // while the stop is awaited (awaiting the stop first would wait forever).
                let ((), r) = tokio::join!(handle.stop(true), &mut server);
                r
            }
        };
        if let Some(h) = redirect_handle {
            h.stop(false).await;
        }
        if let Some(t) = redirect_task {
            let _ = t.await;
        }
        fwd.abort();
        revoker.abort();
        r
    }
}

/// The shared state and the session cookie key for a config and two clients (loads or
/// creates the session key file). [`Application::build`] uses it; tests use it with [`app`].
pub fn build_state(
    cfg: WebConfig,
    agent: Client,
    stager: Client,
) -> Result<(web::Data<AppState>, Key), StartError> {
    let stagers = vec![single_stager(&cfg, stager)];
    build_state_with(cfg, vec![agent], stagers)
}

/// [`build_state`] with several agent clients and stagers.
pub fn build_state_with(
    cfg: WebConfig,
    agents: Vec<Client>,
    stagers: Vec<StagerPeer>,
) -> Result<(web::Data<AppState>, Key), StartError> {
    build_state_relay(cfg, agents, stagers, None, None)
}

fn build_state_relay(
    cfg: WebConfig,
    agents: Vec<Client>,
    stagers: Vec<StagerPeer>,
    relay: Option<crate::relay::Relay>,
    link: Option<crate::link_endpoint::LinkEndpoint>,
) -> Result<(web::Data<AppState>, Key), StartError> {
    let key = secrets::load_or_create_session_key(&cfg.session_key)?;
    let metrics = Arc::new(Metrics::default());
    let backend = Backend::with_peers(agents, stagers, cfg.backend_timeout(), metrics.clone());
    let keys = crate::signing::SigningKeys::load(&cfg.signing_public_keys)?;
    let mut state = AppState::new(cfg, backend, metrics, keys);
    state.relay = relay;
    state.link = link;
    let state = web::Data::new(state);
    Ok((state, Key::from(&key)))
}

/// The actix application: routes, sessions, security headers, metrics. One per worker.
pub fn app(
    state: web::Data<AppState>,
    key: Key,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let relay = state.relay.clone();
    let link = state.link.clone();
    App::new()
        .app_data(state)
        .app_data(web::PayloadConfig::new(crate::body::KEEP))
        // The relay's three requests carry the link's packets, not pages: they skip the
        // pages' middleware (body read-ahead, sessions, browser headers, per-route
        // metrics), about 1.5 µs of every relay round trip on a 2-vCPU VM.
        .configure(|c| crate::relay::configure(c, relay.as_ref()))
        .service(
            web::scope("")
                .configure(routes::configure)
                .configure(|c| crate::link_endpoint::configure(c, link.as_ref()))
                .default_service(web::to(not_found))
                .wrap(actix_web::middleware::from_fn(crate::body::read_first))
                .wrap(session_middleware(key))
                .wrap(security_headers())
                .wrap(actix_web::middleware::from_fn(record_metrics)),
        )
}

fn local_port(l: &TcpListener) -> Result<u16, StartError> {
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| StartError::Bind {
            addr: "listener".into(),
            source,
        })
}

/// The session cookie: private (encrypted + authenticated), Secure, HttpOnly, SameSite=Lax,
/// a browser-session cookie (idle/absolute limits are enforced in `session`).
pub fn session_middleware(key: Key) -> SessionMiddleware<CookieSessionStore> {
    SessionMiddleware::builder(CookieSessionStore::default(), key)
        .cookie_name("ffs_session".into())
        .cookie_secure(true)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(BrowserSession::default())
        .build()
}

/// Security headers on every response.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CSP))
        .add((
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::CACHE_CONTROL, "no-store"))
        .add((
            "Permissions-Policy",
            "camera=(), microphone=(), geolocation=()",
        ))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
}

async fn record_metrics(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().to_string();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await;
    if let Some(state) = state {
        let (route, status) = match &res {
            Ok(r) => (
                r.request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".into()),
                r.status().as_u16(),
            ),
            Err(e) => ("error".into(), e.as_response_error().status_code().as_u16()),
        };
        state
            .metrics
            .request(&method, &route, status, start.elapsed());
    }
    res
}

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}

struct RedirectTarget {
    host: String,
    port: u16,
}

async fn redirect_to_https(req: HttpRequest, t: web::Data<RedirectTarget>) -> HttpResponse {
    let host = if t.host.is_empty() {
        let h = req.connection_info().host().to_string();
        strip_port(&h).to_string()
    } else {
        t.host.clone()
    };
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let port = if t.port == 443 {
        String::new()
    } else {
        format!(":{}", t.port)
    };
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, format!("https://{host}{port}{pq}")))
        .finish()
}

/// `host:port` → `host`, keeping bracketed IPv6 literals whole.
fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.split_once(']').map_or(h, |(a, _)| &h[..=a.len()]);
    }
    match h.rsplit_once(':') {
        Some((a, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !a.contains(':') => a,
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
    }
}
