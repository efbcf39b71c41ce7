//! Alerts reach a webhook: a certificate inside its expiry warning, an
//! errored listener (and, in tests/outbound_as2.rs, a send that failed for
//! good); the expiry gauge and `atom certs list --expiring` agree.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The alerts the receiver got, until `done` holds or 60 s pass.
fn alerts_until(
    rx: &std::sync::mpsc::Receiver<(String, Vec<u8>)>,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "alerts so far: {got:#?}");
        if let Ok((head, body)) = rx.recv_timeout(left) {
            assert!(head.starts_with("POST /hook "), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/json"),
                "{head}"
            );
            got.push(serde_json::from_slice(&body).expect("alert JSON"));
        }
    }
    got
}

#[test]
fn an_expiring_certificate_and_an_errored_listener_reach_the_webhook() {
    let site = Site::new("");
    site.atom_ok(&["certs", "generate", "soon", "--days", "5"]);
    site.atom_ok(&["certs", "generate", "later", "--days", "400"]);
    // The first POST is refused: the alert is retried.
    let (port, rx) = http_receiver(1);
    let mut config = std::fs::read_to_string(site.config()).expect("atom.yaml");
    config.push_str(&format!(
        "alerts:\n  webhook_url: http://127.0.0.1:{port}/hook\n  check_interval_seconds: 1\n"
    ));
    std::fs::write(site.config(), config).expect("atom.yaml");
    site.deploy(
        "broken",
        "start:\n  as2:\n    as2_from:\n      id: [not, an, id]\n",
    );
    let running = site.start();

    let got = alerts_until(&rx, |got| {
        got.iter().any(|a| a["kind"] == "listener_errored")
            && got.iter().any(|a| a["kind"] == "certificate_expiring")
    });
    let cert = got
        .iter()
        .find(|a| a["kind"] == "certificate_expiring")
        .expect("certificate alert");
    assert_eq!(cert["details"]["owner"], "soon", "{cert:#}");
    assert_eq!(cert["details"]["threshold_days"], 7, "{cert:#}");
    assert_eq!(cert["severity"], "critical", "{cert:#}");
    assert_eq!(cert["atom"], "test-atom");
    let left = cert["details"]["seconds_left"].as_i64().expect("seconds");
    assert!((4 * 86_400..=5 * 86_400).contains(&left), "{left}");
    assert!(
        !got.iter().any(|a| a["details"]["owner"] == "later"),
        "400 days is outside every threshold: {got:#?}"
    );
    let listener = got
        .iter()
        .find(|a| a["kind"] == "listener_errored")
        .expect("listener alert");
    assert_eq!(listener["details"]["listener"], "broken", "{listener:#}");

    // Raised once: the next checks send nothing new.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(rx.try_recv().is_err(), "an alert was repeated");

    // The gauge, through the admin API.
    let token = std::fs::read_to_string(site.path().join("data/admin.token")).expect("token");
    let metrics = get(
        running.admin,
        "/metrics",
        &[("Authorization".into(), format!("Bearer {}", token.trim()))],
    )
    .text();
    let soon = metrics
        .lines()
        .find(|l| l.starts_with("atom_certificate_expiry_seconds{") && l.contains("owner=\"soon\""))
        .unwrap_or_else(|| panic!("no gauge for soon:\n{metrics}"));
    let value: i64 = soon
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("gauge value");
    assert!((4 * 86_400..=5 * 86_400).contains(&value), "{soon}");
    assert!(
        metrics.contains("atom_alerts_total{kind=\"certificate_expiring\",result=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("atom_alerts_total{kind=\"certificate_expiring\",result=\"retried\"}")
            || metrics
                .contains("atom_alerts_total{kind=\"listener_errored\",result=\"retried\"} 1"),
        "{metrics}"
    );

    // The CLI's view.
    let expiring = site.atom_ok(&["certs", "list", "--expiring", "30d"]);
    assert!(
        expiring.contains("soon") && !expiring.contains("later"),
        "{expiring}"
    );
    let none = site.atom_ok(&["certs", "list", "--expiring", "1"]);
    assert!(
        none.contains("no certificate expires within 1 days"),
        "{none}"
    );
    assert_eq!(running.stop(), Some(0));
}
