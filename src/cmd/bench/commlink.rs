//! `ffs bench commlink`: presents `commlink::bench` (round trips and request rate beside
//! plain TCP and TLS 1.3, the HTTP relay on a minimal host, and the relay and the https
//! carrier through the real web's endpoints set up by `web_frontend::carrier_bed`; cipher
//! throughput, per-message work) as tables or JSON, with the issue-15 targets judged
//! against a TLS baseline and the issue-10 targets against the commlink over raw TCP, all
//! measured in the same run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use commlink::Suite;
use commlink::bench::{Carried, Kind, Options, Report};
use serde::Serialize;
use web_frontend::carrier_bed::{BedCarrier, CarrierBed};

use super::{Align, Bars, Table, f1};

/// The default suite's round trip must stay within this factor of TLS's (issue 15).
const TARGET_RATIO: f64 = 1.2;
/// Requests per second the default suite must carry on one connection (issue 15).
const TARGET_REQ_PER_SEC: f64 = 100_000.0;
/// The relay's round trip must stay within this factor of the commlink over raw TCP
/// (issue 10), and it must answer again this soon after a cut receive channel.
const TARGET_RELAY_RATIO: f64 = 2.0;
const TARGET_RELAY_RECONNECT_MS: f64 = 1000.0;
/// The https carrier's round trip must stay within this factor of the commlink over raw
/// TCP (issue 10).
const TARGET_HTTPS_RATIO: f64 = 1.3;

/// `ffs bench commlink` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed sequential round trips per transport (after the warm-up); also the number of
    /// requests in each transport's concurrent phase.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Requests in flight at once in the concurrent phase. Commlink: C concurrent calls on
    /// one connection; TCP and TLS: C connections, each doing sequential round trips.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Untimed round trips before the timed ones.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Print the results as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also measure the HTTP relay through this forward proxy (`http://host:port`, e.g. a
    /// squid that relays plain HTTP to loopback).
    #[arg(long)]
    relay_proxy: Option<String>,
    /// Also measure the https carrier through this forward proxy (`http://host:port`, which
    /// must allow `CONNECT` to `--https-port`); the direct row is always measured.
    #[arg(long)]
    https_proxy: Option<String>,
    /// The port of the measured web's HTTPS listener for the `--https-proxy` row (on
    /// 127.0.0.1; 0 = any free port).
    #[arg(long, default_value_t = 0)]
    https_port: u16,
}

/// The JSON output: the library's report plus the targets and verdicts.
#[derive(Debug, Serialize)]
struct Judged<'a> {
    #[serde(flatten)]
    report: &'a Report,
    ratio_commlink_default_over_tls_p50: f64,
    ratio_commlink_3des_over_tls_p50: f64,
    target_ratio: f64,
    target_met: bool,
    commlink_default_req_per_sec: f64,
    target_req_per_sec: f64,
    target_req_per_sec_met: bool,
    /// Each relay row's p50 over the commlink's (default suite, raw TCP) p50.
    ratio_relay_over_commlink_tcp_p50: Vec<(&'static str, f64)>,
    target_relay_ratio: f64,
    target_relay_reconnect_ms: f64,
    /// Each https carrier row's p50 over the commlink's (default suite, raw TCP) p50.
    ratio_https_over_commlink_tcp_p50: Vec<(&'static str, f64)>,
    target_https_ratio: f64,
}

impl<'a> Judged<'a> {
    fn new(report: &'a Report) -> Judged<'a> {
        let ratio = report.ratio_to_tls(Suite::default());
        let rate = report
            .transport(Kind::Commlink(Suite::default()))
            .map_or(0.0, |t| t.requests_per_sec);
        Judged {
            report,
            ratio_commlink_default_over_tls_p50: ratio,
            ratio_commlink_3des_over_tls_p50: report.ratio_to_tls(Suite::Tdes),
            target_ratio: TARGET_RATIO,
            target_met: ratio <= TARGET_RATIO,
            commlink_default_req_per_sec: rate,
            target_req_per_sec: TARGET_REQ_PER_SEC,
            target_req_per_sec_met: rate >= TARGET_REQ_PER_SEC,
            ratio_relay_over_commlink_tcp_p50: ratios_to_tcp(report, "relay"),
            target_relay_ratio: TARGET_RELAY_RATIO,
            target_relay_reconnect_ms: TARGET_RELAY_RECONNECT_MS,
            ratio_https_over_commlink_tcp_p50: ratios_to_tcp(report, "https"),
            target_https_ratio: TARGET_HTTPS_RATIO,
        }
    }
}

/// Each row whose name starts with `prefix`: its p50 over the commlink's (default suite,
/// raw TCP) p50 of the same run.
fn ratios_to_tcp(report: &Report, prefix: &str) -> Vec<(&'static str, f64)> {
    let tcp = report
        .transport(Kind::Commlink(Suite::default()))
        .map_or(f64::NAN, |t| t.p50_us);
    report
        .transports
        .iter()
        .filter(|t| t.transport.starts_with(prefix))
        .map(|t| (t.transport, t.p50_us / tcp))
        .collect()
}

/// Runs `ffs bench commlink`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.requests == 0 || args.concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let opts = Options {
        requests: args.requests,
        concurrency: args.concurrency,
        warmup: args.warmup,
        cipher_payload: 1 << 20,
        cipher_min_time: Duration::from_millis(1500),
        per_message_rounds: 20_000,
        relay_proxy: args.relay_proxy.clone(),
    };
    // The https carrier through the real web frontend (which the commlink crate cannot
    // start), measured in the same run as the rest.
    let direct = CarrierBed::start(0, None)
        .await
        .context("setting up the https carrier (direct)")?;
    let via = match &args.https_proxy {
        Some(proxy) => Some(
            CarrierBed::start(args.https_port, Some(proxy))
                .await
                .with_context(|| format!("setting up the https carrier through {proxy}"))?,
        ),
        None => None,
    };
    // The relay as deployed: `relay+https://` to the web's own relay endpoint (the rows
    // above measure the relay's code on a minimal plain-HTTP host).
    let relay_web = CarrierBed::start_with(BedCarrier::Relay, 0, None)
        .await
        .context("setting up the relay through the real web")?;
    let model = format!(
        "{} concurrent calls on one https carrier link",
        args.concurrency
    );
    let mut carried = vec![Carried {
        name: "relay https via the web",
        concurrency_model: format!(
            "{} concurrent calls on one relay attachment",
            args.concurrency
        ),
        client: relay_web.client.clone(),
    }];
    carried.push(Carried {
        name: "https carrier direct",
        concurrency_model: model.clone(),
        client: direct.client.clone(),
    });
    if let Some(via) = &via {
        carried.push(Carried {
            name: "https carrier via proxy",
            concurrency_model: model,
            client: via.client.clone(),
        });
    }
    let report = commlink::bench::run_with(&opts, carried, Arc::new(Bars::new(args.json))).await?;
    drop((direct, via, relay_web));
    let judged = Judged::new(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&judged)?);
    } else {
        print!("{}", render(&judged));
    }
    Ok(())
}

fn render(j: &Judged<'_>) -> String {
    let r = j.report;
    let mut s = format!(
        "ffs bench commlink: loopback, {}-byte tobj, {} sequential round trips after {} warm-up; {} requests at concurrency {}\n",
        r.message_bytes, r.requests, r.warmup, r.requests, r.concurrency
    );
    s += &format!(
        "machine: {} CPUs, {}\n\n",
        r.machine.cpus, r.machine.cpu_model
    );
    let mut t = Table::new(&[
        ("transport", Align::Left),
        ("p50 µs", Align::Right),
        ("p99 µs", Align::Right),
        ("mean µs", Align::Right),
        ("min µs", Align::Right),
        ("req/s", Align::Right),
        ("concurrent phase", Align::Left),
    ]);
    for x in &r.transports {
        t.row(vec![
            x.transport.into(),
            f1(x.p50_us),
            f1(x.p99_us),
            f1(x.mean_us),
            f1(x.min_us),
            format!("{:.0}", x.requests_per_sec),
            x.concurrency_model.clone(),
        ]);
    }
    s += &t.render();
    s += "(tcp and tls echo the encoded tobj line unparsed; the commlink runs its full path)\n\n";
    let verdict = |met| if met { "met" } else { "MISSED" };
    let carriers = [
        (&j.ratio_relay_over_commlink_tcp_p50, j.target_relay_ratio),
        (&j.ratio_https_over_commlink_tcp_p50, j.target_https_ratio),
    ];
    for (ratios, target) in carriers {
        for (name, ratio) in ratios {
            s += &format!(
                "{name} RTT p50 / commlink {} (tcp) RTT p50 = {ratio:.2}x  (target <= {target:.1}x: {})\n",
                Suite::default().name(),
                verdict(*ratio <= target),
            );
        }
    }
    s += &format!(
        "relay: a request sent as its receive channel is cut is answered after p50 {:.1} ms, max {:.1} ms over {} cuts  (target < {:.0} ms: {})\n",
        r.relay_reconnect.p50_ms,
        r.relay_reconnect.max_ms,
        r.relay_reconnect.cuts,
        j.target_relay_reconnect_ms,
        verdict(r.relay_reconnect.max_ms < j.target_relay_reconnect_ms),
    );
    s += &format!(
        "commlink {} (default) RTT p50 / TLS RTT p50 = {:.2}x  (target <= {:.1}x: {}); 3des: {:.2}x\n",
        Suite::default().name(),
        j.ratio_commlink_default_over_tls_p50,
        j.target_ratio,
        verdict(j.target_met),
        j.ratio_commlink_3des_over_tls_p50,
    );
    s += &format!(
        "commlink {} req/s on one connection = {:.0}  (target >= {:.0}: {})\n\n",
        Suite::default().name(),
        j.commlink_default_req_per_sec,
        j.target_req_per_sec,
        verdict(j.target_req_per_sec_met)
    );
    let mut t = Table::new(&[
        (
            "cipher throughput (1 MiB payloads, MB = 10^6 B)",
            Align::Left,
        ),
        ("MB/s wall", Align::Right),
        ("MB/s on-CPU", Align::Right),
    ]);
    for c in &r.ciphers {
        t.row(vec![c.what.clone(), f1(c.mb_per_sec), f1(c.mb_per_cpu_sec)]);
    }
    s += &t.render();
    s.push('\n');
    let mut t = Table::new(&[
        ("commlink on-CPU per message", Align::Left),
        ("encode+seal+open+parse µs", Align::Right),
        ("of it CBC", Align::Right),
        ("x2 per round trip", Align::Right),
    ]);
    for p in &r.per_message {
        t.row(vec![
            p.suite.into(),
            f1(p.encode_seal_open_parse_us),
            p.cbc_us.map_or("-".into(), f1),
            f1(p.per_round_trip_us),
        ]);
    }
    s += &t.render();
    s
}
