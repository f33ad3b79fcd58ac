//! Responder cookies against IKE_SA_INIT floods (RFC 7296 §2.6).

use super::*;

/// §2.6: the cookie secret SHOULD be changed periodically; this often.
const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// §2.6: cookies from the previous secret are accepted this long after a
/// change, so an initiator caught mid-exchange is not refused.
const COOKIE_PREVIOUS_GRACE: Duration = Duration::from_secs(60);

/// The responder's cookie secrets (§2.6), rotated lazily as `now` advances.
pub(super) struct CookieSecrets {
    /// <VersionIDofSecret> of `current`, the cookie's first octet.
    version: u8,
    current: [u8; 32],
    /// When `current` came into use; `None` until the first cookie.
    since: Option<Instant>,
    /// The version before `current`, still accepted during the grace.
    previous: Option<(u8, [u8; 32])>,
}

impl CookieSecrets {
    pub(super) fn new(rng: &mut dyn Rng) -> Self {
        let mut current = [0u8; 32];
        rng.fill(&mut current);
        Self {
            version: 0,
            current,
            since: None,
            previous: None,
        }
    }

    /// Replaces the secret once it is `COOKIE_SECRET_LIFETIME` old, keeping
    /// the old one (if it only just expired) for `COOKIE_PREVIOUS_GRACE`.
    pub(super) fn rotate(&mut self, now: Instant, rng: &mut dyn Rng) {
        let Some(since) = self.since else {
            self.since = Some(now);
            return;
        };
        let age = now.saturating_duration_since(since);
        if age < COOKIE_SECRET_LIFETIME {
            return;
        }
        let mut fresh = [0u8; 32];
        rng.fill(&mut fresh);
        let old = std::mem::replace(&mut self.current, fresh);
        // Cookies handed out just before the change stay valid a little;
        // a secret unused for a whole extra period has no such cookies.
        self.previous =
            (age < COOKIE_SECRET_LIFETIME + COOKIE_PREVIOUS_GRACE).then_some((self.version, old));
        self.version = self.version.wrapping_add(1);
        self.since = Some(now);
    }

    /// The secret for a cookie's version octet, if still accepted.
    pub(super) fn for_version(&self, version: u8, now: Instant) -> Option<&[u8; 32]> {
        if version == self.version {
            return Some(&self.current);
        }
        let within_grace = self
            .since
            .is_some_and(|s| now.saturating_duration_since(s) < COOKIE_PREVIOUS_GRACE);
        match &self.previous {
            Some((v, secret)) if *v == version && within_grace => Some(secret),
            _ => None,
        }
    }
}

impl Endpoint {
    /// §2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>).
    pub(super) fn cookie_with(
        version: u8,
        secret: &[u8; 32],
        nonce_i: &[u8],
        remote: SocketAddr,
        spi_i: u64,
    ) -> Vec<u8> {
        let ip = match remote.ip() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let mut c = vec![version];
        c.extend_from_slice(
            PrfAlg::HmacSha256
                .prf(secret, &[nonce_i, &ip, &spi_i.to_be_bytes()])
                .expose(),
        );
        c
    }

    /// The cookie we hand out now.
    pub(super) fn cookie_for(&self, nonce_i: &[u8], remote: SocketAddr, spi_i: u64) -> Vec<u8> {
        let c = &self.cookies;
        Self::cookie_with(c.version, &c.current, nonce_i, remote, spi_i)
    }

    /// Whether `cookie` is one we issued with the current secret, or with the
    /// previous one within its grace (§2.6).
    pub(super) fn cookie_valid(
        &self,
        now: Instant,
        cookie: &[u8],
        nonce_i: &[u8],
        remote: SocketAddr,
        spi_i: u64,
    ) -> bool {
        let Some((&version, _)) = cookie.split_first() else {
            return false;
        };
        self.cookies
            .for_version(version, now)
            .is_some_and(|secret| {
                let want = Self::cookie_with(version, secret, nonce_i, remote, spi_i);
                constant_time_eq(cookie, &want)
            })
    }

    /// §2.6: once `cookie_threshold` SAs are half open (or, with `force`,
    /// its source holds its share already), an IKE_SA_INIT request is
    /// accepted only if its first payload is a cookie we issued; otherwise
    /// the answer is a fresh cookie and no state is kept.
    pub(super) fn check_cookie(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        h: &Header,
        p: &[Payload],
        nonce_i: &[u8],
        force: bool,
    ) -> Result<(), ExchangeError> {
        let half_open = self.sas.half_open_count();
        if !force && half_open < self.config.cookie_threshold {
            return Ok(());
        }
        self.cookies.rotate(now, self.rng.as_mut());
        let ok = matches!(p.first(), Some(Payload::Notify(n)) if n.ty == NotifyType::COOKIE
            && self.cookie_valid(now, &n.data, nonce_i, remote, h.spi_i));
        if ok {
            Ok(())
        } else {
            Err(ExchangeError::CookieRequired(
                self.cookie_for(nonce_i, remote, h.spi_i),
            ))
        }
    }
}
