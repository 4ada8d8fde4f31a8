//! Enrolment codes: what a coordinator shows a volunteer so their phone can sign in.
//!
//! A code is 8 characters from an alphabet without look-alikes (no 0/O, 1/I/L), about
//! 39 bits; it is stored as SHA-256, used once, and lives `enrolment_code_ttl` (15
//! minutes by default). Typing is forgiving: case, spaces and dashes do not matter.
//!
//! Guessing is limited twice, in memory on each node ([`Guesses`]): a source (IP
//! address) gets [`PER_SOURCE`] wrong codes per [`WINDOW`], and all sources together
//! [`GLOBAL`] — a wrong guess names no code, so the budget shared by every live code is
//! what bounds the guesses against any one of them: at most `GLOBAL` per window against
//! 31^8 ≈ 8.5·10^11 possible codes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Characters of a code: digits and capitals without 0, 1, I, L, O.
pub const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters per code.
pub const LENGTH: usize = 8;
/// The window wrong guesses are counted in.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Wrong codes one source may try per window.
pub const PER_SOURCE: u32 = 10;
/// Wrong codes all sources together may try per window.
pub const GLOBAL: u32 = 200;

/// A fresh random code.
pub fn new_code() -> String {
    // Rejection sampling keeps every character equally likely (256 is not a multiple
    // of 31).
    let limit = 256 - (256 % ALPHABET.len());
    let mut out = String::with_capacity(LENGTH);
    while out.len() < LENGTH {
        for b in crate::store::crypto::random_bytes::<16>() {
            if usize::from(b) < limit && out.len() < LENGTH {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    out
}

/// The canonical form of a typed code (upper case, no spaces or dashes), or `None`
/// when it cannot be a code at all.
pub fn normalise(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == LENGTH && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

/// `ABCD-EFGH`: easier to read aloud and type.
pub fn display(code: &str) -> String {
    let (a, b) = code.split_at(code.len() / 2);
    format!("{a}-{b}")
}

/// The enrolment link (what the QR code holds): the volunteer app with the code in
/// the fragment, which browsers never send to a server or put in a Referer.
pub fn link(base: &str, code: &str) -> String {
    format!("{}/app/#enrol={code}", base.trim_end_matches('/'))
}

/// The QR code of `text` as an SVG element, rendered on the server.
pub fn qr_svg(text: &str) -> Result<String, crate::Error> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| crate::Error::Invalid(format!("QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build())
}

/// A code for `user` in `wijk`, valid `secs`, for `buurtsync demo` (no coordinator
/// there to make one on /beheer). Shown as `ABCD-EFGH`.
pub async fn demo_code(
    store: &crate::store::Store,
    user: &str,
    wijk: &sync_core::partition::WijkId,
    secs: i64,
) -> Result<String, crate::Error> {
    let code = new_code();
    let id = format!(
        "enr_{}",
        hex::encode(crate::store::crypto::random_bytes::<6>())
    );
    store
        .identity()
        .insert_enrolment_code(
            &id,
            &crate::auth::hash_secret(&code),
            user,
            wijk,
            "demo",
            crate::store::now() + secs,
        )
        .await?;
    Ok(display(&code))
}

/// Counts of wrong guesses, per source and in all.
#[derive(Debug, Default)]
pub struct Guesses {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    per_source: HashMap<IpAddr, (Instant, u32)>,
    global: Option<(Instant, u32)>,
}

impl Guesses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// May this source try a code now? Checked *before* the code is looked at, so a
    /// source over its budget learns nothing, right or wrong.
    pub fn allowed(&self, source: IpAddr, now: Instant) -> bool {
        let mut c = self.lock();
        let fresh = |entry: &(Instant, u32)| now.duration_since(entry.0) < WINDOW;
        if let Some(g) = c.global {
            if fresh(&g) && g.1 >= GLOBAL {
                return false;
            }
        }
        match c.per_source.get(&source) {
            Some(entry) if fresh(entry) => entry.1 < PER_SOURCE,
            Some(_) => {
                c.per_source.remove(&source);
                true
            }
            None => true,
        }
    }

    /// Counts a wrong code from `source`.
    pub fn wrong(&self, source: IpAddr, now: Instant) {
        let mut c = self.lock();
        // Bounded memory: sources whose window has passed are forgotten.
        if c.per_source.len() > 10_000 {
            c.per_source
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = c.per_source.entry(source).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        let global = c.global.get_or_insert((now, 0));
        if now.duration_since(global.0) >= WINDOW {
            *global = (now, 0);
        }
        global.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes have the right length and alphabet, and typing variants normalise back.
    #[test]
    fn codes_and_normalising() {
        let code = new_code();
        assert_eq!(normalise(&code).as_deref(), Some(code.as_str()));
        let check = |typed: &str, expected: Option<&str>| {
            assert_eq!(normalise(typed).as_deref(), expected, "{typed:?}");
        };
        check("abcd-efgh", Some("ABCDEFGH"));
        check(" 2345 6789 ", Some("23456789"));
        check("ABCDEFG", None);
        check("ABCDEFGO", None); // O is not in the alphabet
        check("ABCDEFGHJ", None);
        assert_eq!(display("ABCDEFGH"), "ABCD-EFGH");
    }

    /// A source is stopped after its budget of wrong codes, another source is not, and
    /// the window's end lets it try again.
    #[test]
    fn wrong_guesses_are_limited_per_source() {
        let g = Guesses::default();
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.1".parse().expect("ip");
        let t = Instant::now();
        for _ in 0..PER_SOURCE {
            assert!(g.allowed(a, t));
            g.wrong(a, t);
        }
        assert!(!g.allowed(a, t));
        assert!(g.allowed(b, t));
        assert!(g.allowed(a, t + WINDOW));
    }

    /// Many sources together are stopped by the global budget.
    #[test]
    fn wrong_guesses_are_limited_globally() {
        let g = Guesses::default();
        let t = Instant::now();
        for i in 0..GLOBAL {
            let source = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            assert!(g.allowed(source, t));
            g.wrong(source, t);
        }
        assert!(!g.allowed("192.0.2.1".parse().expect("ip"), t));
    }

    /// The QR code renders as SVG.
    #[test]
    fn qr_is_svg() {
        let svg = qr_svg(&link("https://sync.example", "ABCDEFGH")).expect("qr");
        assert!(svg.contains("<svg"), "{svg}");
    }
}
