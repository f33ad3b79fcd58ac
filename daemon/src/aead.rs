//! The AES-GCM implementation of the ESP path, chosen once at start (the daemon's only
//! process-wide crypto setting).

use std::time::Duration;

/// Chooses the AES-GCM implementation of the ESP path before any SA exists: as configured, or
/// (`auto`) the faster of ring and aws-lc-rs sealing packets of the tunnel MTU on this CPU,
/// measured side by side in alternating rounds (the faster one differs between CPUs with and
/// without AVX-512 and between packet sizes). Logs the choice and the figures.
pub fn choose(choice: dmvpn_config::AeadChoice, mtu: usize) -> &'static str {
    use dmvpn_crypto::aead::{Provider, measure, set_provider};
    let picked = match choice {
        dmvpn_config::AeadChoice::Ring => Provider::Ring,
        dmvpn_config::AeadChoice::AwsLc => Provider::AwsLc,
        dmvpn_config::AeadChoice::Auto => {
            let mut best = [0f64; 2];
            for _ in 0..3 {
                for (i, p) in Provider::ALL.into_iter().enumerate() {
                    let r = measure(p, mtu, Duration::from_millis(15)).unwrap_or(0.0);
                    best[i] = best[i].max(r);
                }
            }
            let gbit = |b: f64| b * 8.0 / 1e9;
            let p = if best[1] > best[0] {
                Provider::AwsLc
            } else {
                Provider::Ring
            };
            tracing::info!(
                ring_gbit = format_args!("{:.1}", gbit(best[0])),
                aws_lc_rs_gbit = format_args!("{:.1}", gbit(best[1])),
                packet_bytes = mtu,
                "AES-GCM providers measured on this CPU"
            );
            p
        }
    };
    set_provider(picked);
    tracing::info!(
        provider = picked.name(),
        ?choice,
        "AES-GCM provider for ESP"
    );
    picked.name()
}
