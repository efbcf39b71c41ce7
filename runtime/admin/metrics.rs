//! Prometheus metrics, served by the admin API at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the runtime exports.
pub struct Metrics {
    registry: Registry,
    /// Requests on /as2 by outcome (processed, error, duplicate, paused, unknown_partner, ...).
    pub requests: IntCounterVec,
    /// Time from request start to response, by outcome.
    pub receive_seconds: HistogramVec,
    /// Asynchronous MDN deliveries by result.
    pub async_mdns: IntCounterVec,
    /// Listeners by state, refreshed at each scrape.
    pub listeners: IntGaugeVec,
    /// Finished executions by process, mode and status.
    pub executions: IntCounterVec,
    /// Execution time from receipt to end, by mode.
    pub execution_seconds: HistogramVec,
    /// Outbound AS2 attempts by partner and result (acknowledged, sent,
    /// retried, failed).
    pub outbound: IntCounterVec,
    /// Seconds until each certificate in use expires (negative: expired),
    /// by where it is, its use and its fingerprint; set by the alerts check.
    pub certificate_expiry: IntGaugeVec,
    /// Alerts raised by kind, and webhook deliveries by result.
    pub alerts: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("atom".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("as2_requests_total", "AS2 requests by outcome"),
            &["outcome"],
        )?;
        let receive_seconds = HistogramVec::new(
            HistogramOpts::new(
                "as2_receive_seconds",
                "AS2 request handling time by outcome",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["outcome"],
        )?;
        let async_mdns = IntCounterVec::new(
            Opts::new(
                "as2_async_mdn_total",
                "Asynchronous MDN delivery attempts by result",
            ),
            &["result"],
        )?;
        let listeners = IntGaugeVec::new(Opts::new("listeners", "Listeners by state"), &["state"])?;
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "certificate_expiry_seconds",
                "Seconds until a certificate in use expires (negative once expired)",
            ),
            &["owner", "use", "fingerprint"],
        )?;
        let alerts = IntCounterVec::new(
            Opts::new(
                "alerts_total",
                "Alerts by kind and webhook result (delivered, retried, failed, logged)",
            ),
            &["kind", "result"],
        )?;
        let executions = IntCounterVec::new(
            Opts::new(
                "executions_total",
                "Finished process executions by process, mode and status",
            ),
            &["process", "mode", "status"],
        )?;
        let execution_seconds = HistogramVec::new(
            HistogramOpts::new(
                "execution_seconds",
                "Time from receipt to the end of an execution, by mode",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
            &["mode"],
        )?;
        let outbound = IntCounterVec::new(
            Opts::new(
                "as2_outbound_total",
                "Outbound AS2 attempts by partner and result (acknowledged, sent, retried, failed)",
            ),
            &["partner", "result"],
        )?;
        registry.register(Box::new(outbound.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(receive_seconds.clone()))?;
        registry.register(Box::new(async_mdns.clone()))?;
        registry.register(Box::new(listeners.clone()))?;
        registry.register(Box::new(certificate_expiry.clone()))?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(executions.clone()))?;
        registry.register(Box::new(execution_seconds.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            receive_seconds,
            async_mdns,
            listeners,
            executions,
            execution_seconds,
            outbound,
            certificate_expiry,
            alerts,
        })
    }

    /// Counts one finished request.
    pub fn observe(&self, outcome: &str, seconds: f64) {
        self.requests.with_label_values(&[outcome]).inc();
        self.receive_seconds
            .with_label_values(&[outcome])
            .observe(seconds);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
