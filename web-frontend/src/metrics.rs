//! Prometheus metrics, hand-written: request counts and latency histograms per route,
//! back-end call latencies (incl. `stager.stage`), and link state. Rendered in the text
//! exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    backend: BTreeMap<(&'static str, &'static str), Histogram>,
    backend_errors: BTreeMap<(&'static str, &'static str), u64>,
    deliveries_forwarded: u64,
}

/// All metrics of one frontend.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Records one HTTP request by method, route pattern and status.
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        m.latency
            .entry(route.to_string())
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Records one back-end request (`peer` = agent|stager, `op` = its message type).
    pub fn backend(&self, peer: &'static str, op: &'static str, elapsed: Duration, ok: bool) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.backend
            .entry((peer, op))
            .or_default()
            .observe(elapsed.as_secs_f64());
        if !ok {
            *m.backend_errors.entry((peer, op)).or_default() += 1;
        }
    }

    /// Counts deliveries forwarded from the stager to the agent.
    pub fn deliveries_forwarded(&self, n: u64) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.deliveries_forwarded += n;
    }

    /// The text exposition, with the current link states.
    pub fn render(&self, agent_up: bool, stager_up: bool) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP ffs_web_requests_total HTTP requests by method, route and status.\n# TYPE ffs_web_requests_total counter\n");
        for ((method, route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "ffs_web_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                esc(method),
                esc(route)
            );
        }
        out.push_str("# HELP ffs_web_request_duration_seconds HTTP request latency by route.\n# TYPE ffs_web_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            h.render(
                &mut out,
                "ffs_web_request_duration_seconds",
                &format!("route=\"{}\"", esc(route)),
            );
        }
        out.push_str("# HELP ffs_web_backend_duration_seconds Commlink request latency by peer and message type (stager.stage is the stage latency).\n# TYPE ffs_web_backend_duration_seconds histogram\n");
        for ((peer, op), h) in &m.backend {
            h.render(
                &mut out,
                "ffs_web_backend_duration_seconds",
                &format!("peer=\"{peer}\",op=\"{op}\""),
            );
        }
        out.push_str("# HELP ffs_web_backend_errors_total Failed commlink requests by peer and message type.\n# TYPE ffs_web_backend_errors_total counter\n");
        for ((peer, op), n) in &m.backend_errors {
            let _ = writeln!(
                out,
                "ffs_web_backend_errors_total{{peer=\"{peer}\",op=\"{op}\"}} {n}"
            );
        }
        out.push_str("# HELP ffs_web_link_up Whether the commlink to a peer is up (1) or down (0).\n# TYPE ffs_web_link_up gauge\n");
        let _ = writeln!(
            out,
            "ffs_web_link_up{{peer=\"agent\"}} {}",
            u8::from(agent_up)
        );
        let _ = writeln!(
            out,
            "ffs_web_link_up{{peer=\"stager\"}} {}",
            u8::from(stager_up)
        );
        out.push_str("# HELP ffs_web_deliveries_forwarded_total Stager deliveries recorded with the agent.\n# TYPE ffs_web_deliveries_forwarded_total counter\n");
        let _ = writeln!(
            out,
            "ffs_web_deliveries_forwarded_total {}",
            m.deliveries_forwarded
        );
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::default();
        m.request("GET", "/products", 200, Duration::from_millis(3));
        m.request("GET", "/products", 200, Duration::from_millis(30));
        m.backend("stager", "stager.stage", Duration::from_micros(700), true);
        let t = m.render(true, false);
        assert!(t.contains(
            "ffs_web_requests_total{method=\"GET\",route=\"/products\",status=\"200\"} 2"
        ));
        assert!(t.contains(
            "ffs_web_request_duration_seconds_bucket{route=\"/products\",le=\"0.005\"} 1"
        ));
        assert!(t.contains("ffs_web_request_duration_seconds_count{route=\"/products\"} 2"));
        assert!(t.contains("peer=\"stager\",op=\"stager.stage\",le=\"0.001\"} 1"));
        assert!(t.contains("ffs_web_link_up{peer=\"agent\"} 1"));
        assert!(t.contains("ffs_web_link_up{peer=\"stager\"} 0"));
    }
}
