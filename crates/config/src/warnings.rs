//! What a valid configuration may still get wrong: values the ranges allow for tests and labs
//! but that cost something in production. `dmvpnd --check-config` prints them and the daemon
//! logs them at start and on reload; none stops it.

use std::time::Duration;

use crate::Config;

/// Lifetimes below this are for tests and labs (allowed down to 60 s).
pub const SHORT_LIFETIME: Duration = Duration::from_secs(120);

/// Pre-shared keys shorter than this (in bytes) are within reach of an offline guess: one
/// IKE_AUTH exchange, captured or provoked by posing as a responder, lets an attacker test
/// candidate keys at hash speed without talking to anyone again.
pub const SHORT_PSK: usize = 16;

impl Config {
    /// One line per questionable setting, naming its key.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for (key, lifetime) in [
            ("ike.lifetime", self.ike.lifetime),
            ("ipsec.lifetime", self.ipsec.lifetime),
        ] {
            if lifetime < SHORT_LIFETIME {
                w.push(format!(
                    "{key} = {} s is below {} s: meant for tests and labs; every rekey costs a \
                     Diffie-Hellman exchange on both ends and a moment with two SAs per peer",
                    lifetime.as_secs(),
                    SHORT_LIFETIME.as_secs()
                ));
            }
        }
        if let (Some(g), Some(a)) = (&self.control.group, &self.control.admin_group)
            && g == a
        {
            w.push(format!(
                "control.admin-group = {a:?} is also control.group: every member of it may \
                 clear SAs and reload; leave admin-group unset or name a separate group for \
                 read-only operators"
            ));
        }
        for (i, k) in self.ike.keyring.iter().enumerate() {
            let len = k.psk.expose().len();
            if len < SHORT_PSK {
                w.push(format!(
                    "ike.keyring[{i}] ({:?}): the pre-shared key is {len} bytes, shorter than \
                     {SHORT_PSK}: one captured IKE_AUTH lets an attacker guess it offline; use \
                     at least {SHORT_PSK} random bytes (e.g. `openssl rand -base64 24`)",
                    k.name
                ));
            }
        }
        w
    }
}
