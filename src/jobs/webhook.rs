//! Webhooks per Standard Webhooks v1: a thin JSON event, headers `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`, one signature per configured secret (rotation: receivers accept
//! any). Secrets are `whsec_<base64>` (the Standard Webhooks form) or raw text.
//!
//! Deliveries are rows in the job store, so they survive restarts, show on the job, and are
//! re-sendable; the deliverer retries with exponential backoff and full jitter up to
//! `max_attempts`, then marks the delivery `failed` (kept). Targets are checked when a job is
//! created: loopback, private, link-local, unique-local, unspecified and broadcast addresses
//! (after DNS resolution) are refused unless the host is on the allow-list.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebhookConfig {
    /// Signing secrets (bytes); the first is current, the others still accepted by receivers.
    pub secrets: Vec<Vec<u8>>,
    /// Hosts (names or IP literals) allowed even when they resolve to private addresses.
    pub allow: Vec<String>,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub timeout: Duration,
}

impl WebhookConfig {
    pub fn new(secrets: Vec<Vec<u8>>, allow: Vec<String>) -> Self {
        Self {
            secrets,
            allow,
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A secret as configured: `whsec_<base64>` or raw text.
pub fn parse_secret(s: &str) -> Result<Vec<u8>> {
    match s.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                Error::InvalidOption(format!("webhook secret is not whsec_<base64>: {e}"))
            }),
        None if s.is_empty() => Err(Error::InvalidOption("empty webhook secret".into())),
        None => Ok(s.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` header value: `v1,<sig>` per secret, space-separated.
pub fn sign(secrets: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key)
                .expect("HMAC takes keys of any length. This is a bug.");
            mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
            let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            format!("v1,{sig}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// Checks a webhook target: http(s), and every address it resolves to is public unless its host
/// is allowed.
pub async fn check_target(url: &str, allow: &[String]) -> Result<()> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| Error::InvalidOption(format!("webhook_url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::InvalidOption(
            "webhook_url must be http or https".into(),
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| Error::InvalidOption("webhook_url has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if allow.iter().any(|a| a.eq_ignore_ascii_case(&host)) {
        return Ok(());
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| Error::InvalidOption(format!("webhook_url host {host}: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Error::InvalidOption(format!(
            "webhook_url host {host} has no address"
        )));
    }
    if let Some(ip) = addrs.into_iter().find(|ip| is_private(*ip)) {
        return Err(Error::InvalidOption(format!(
            "webhook_url {host} resolves to {ip}, a loopback, private or link-local address; \
             add the host to --webhook-allow to permit it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cases = [
            ("http://127.0.0.1:9/x", false),
            ("http://10.1.2.3/x", false),
            ("http://192.168.0.1/x", false),
            ("http://169.254.169.254/latest", false),
            ("http://[::1]:80/", false),
            ("http://[fd00::1]/", false),
            ("http://100.64.0.1/", false),
            ("ftp://8.8.8.8/", false),
            ("http://8.8.8.8/hook", true),
            ("https://[2001:4860:4860::8888]/hook", true),
        ];
        for (url, ok) in cases {
            assert_eq!(rt.block_on(check_target(url, &[])).is_ok(), ok, "{url}");
        }
        assert!(
            rt.block_on(check_target("http://127.0.0.1:9/x", &["127.0.0.1".into()]))
                .is_ok()
        );
    }
}
