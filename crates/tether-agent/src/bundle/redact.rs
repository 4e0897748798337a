//! Redaction of everything that goes into an escalation bundle.
//!
//! Secrets are found by shape (Tether's prefixed secrets, `Authorization`,
//! `Cookie` and `Set-Cookie` headers, PEM and PGP private keys, `user:pass@`
//! in URLs, `password=`-style key-values, quoted or not, with spaces, and
//! as URL query parameters) and by value (the agent's credential and proxy passwords
//! known from its config). Each is replaced by `[REDACTED:kind]` and
//! recorded as a [`Redaction`] (file, line, kind), never with the secret.
//! Line numbers are those of the redacted file: redaction never adds or
//! removes a line, so they are also those of the original.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// What was redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An enrollment token (`tet_…`).
    EnrollmentToken,
    /// An agent credential (`tac_…`), or the exact credential of this agent.
    AgentCredential,
    /// An admin token (`tta_…`).
    AdminToken,
    /// The value of an `Authorization` header.
    AuthorizationHeader,
    /// The value of a `Proxy-Authorization` header.
    ProxyAuthorizationHeader,
    /// A PEM private key block.
    PrivateKey,
    /// `user:pass@` in a URL.
    UrlUserinfo,
    /// A `password=`, `passwd:`, `pwd=` value.
    Password,
    /// A `secret=`, `token=`, `api_key=`-style value.
    Secret,
    /// A proxy password known from the config or the environment.
    ProxyPassword,
    /// The value of a `Cookie` or `Set-Cookie` header (sessions are
    /// credentials).
    Cookie,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::EnrollmentToken => "enrollment_token",
            Kind::AgentCredential => "agent_credential",
            Kind::AdminToken => "admin_token",
            Kind::AuthorizationHeader => "authorization_header",
            Kind::ProxyAuthorizationHeader => "proxy_authorization_header",
            Kind::PrivateKey => "private_key",
            Kind::UrlUserinfo => "url_userinfo",
            Kind::Password => "password",
            Kind::Secret => "secret",
            Kind::ProxyPassword => "proxy_password",
            Kind::Cookie => "cookie",
        }
    }

    fn marker(self) -> String {
        format!("[REDACTED:{}]", self.as_str())
    }
}

/// One redaction: where, and what kind. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redaction {
    pub file: String,
    /// 1-based.
    pub line: usize,
    pub kind: Kind,
}

/// Exact secrets shorter than this are not searched for: a two-letter
/// password would redact half the bundle. Shape-based rules still apply.
pub const MIN_EXACT_LEN: usize = 4;

// The patterns are constants; `Regex::new` only fails on a malformed
// pattern, which the unit tests would catch at once.
#[allow(clippy::unwrap_used)]
static PEM_INLINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)")
        .unwrap()
});
#[allow(clippy::unwrap_used)]
static PEM_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----").unwrap());
#[allow(clippy::unwrap_used)]
static AUTH_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(proxy-authorization|authorization)(["']?\s*[:=]\s*["']?)([^"'\r\n,}\]]+)"#)
        .unwrap()
});
#[allow(clippy::unwrap_used)]
static COOKIE_HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(set-cookie|cookie)(["']?\s*[:=]\s*["']?)([^"'\r\n}\]]+)"#).unwrap()
});
#[allow(clippy::unwrap_used)]
static URL_USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@"'<>]*):([^/\s@"'<>]*)@"#).unwrap()
});
#[allow(clippy::unwrap_used)]
/// The key and separator of a secret-looking key-value, and the opening
/// quote of its value if it has one; the value's extent is [`value_end`]'s.
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b([a-z0-9_.-]*(?:password|passwd|pwd|secret|token|credential|api[_-]?key)[a-z0-9_.-]*)(["']?\s*[:=]\s*)(["']?)"#).unwrap()
});
#[allow(clippy::unwrap_used)]
static PREFIXED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(tet|tac|tta)_[A-Za-z0-9_-]{6,}").unwrap());

/// Redacts text, file by file.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    exact: Vec<(String, Kind)>,
}

impl Redactor {
    /// A redactor that also removes these exact strings (the credential,
    /// proxy passwords). Strings shorter than [`MIN_EXACT_LEN`] are ignored.
    pub fn new(known: Vec<(String, Kind)>) -> Redactor {
        let mut exact: Vec<(String, Kind)> = known
            .into_iter()
            .filter(|(s, _)| s.chars().count() >= MIN_EXACT_LEN)
            .collect();
        // Longest first, so a secret that contains another is taken whole.
        exact.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
        exact.dedup_by(|a, b| a.0 == b.0);
        Redactor { exact }
    }

    /// Returns the redacted text and what was redacted in it.
    pub fn redact(&self, file: &str, text: &str) -> (String, Vec<Redaction>) {
        let mut out = String::with_capacity(text.len());
        let mut found = Vec::new();
        let mut in_key = false;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let line_no = i + 1;
            let (body, newline) = match raw.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (raw, ""),
            };
            let mut record = |kind: Kind| {
                found.push(Redaction {
                    file: file.to_owned(),
                    line: line_no,
                    kind,
                })
            };
            if in_key {
                if PEM_END.is_match(body) {
                    in_key = false;
                }
                out.push_str(&Kind::PrivateKey.marker());
                out.push_str(newline);
                continue;
            }
            let mut line = body.to_owned();
            for (secret, kind) in &self.exact {
                let n = line.matches(secret.as_str()).count();
                if n > 0 {
                    line = line.replace(secret.as_str(), &kind.marker());
                    (0..n).for_each(|_| record(*kind));
                }
            }
            line = replace_all(&PEM_INLINE, &line, |c| {
                if !PEM_END.is_match(&c[0]) {
                    in_key = true;
                }
                record(Kind::PrivateKey);
                Kind::PrivateKey.marker()
            });
            line = replace_all(&AUTH_HEADER, &line, |c| {
                let kind = if c[1].eq_ignore_ascii_case("proxy-authorization") {
                    Kind::ProxyAuthorizationHeader
                } else {
                    Kind::AuthorizationHeader
                };
                if c[3].trim().starts_with("[REDACTED") {
                    return c[0].to_owned();
                }
                record(kind);
                format!("{}{}{}", &c[1], &c[2], kind.marker())
            });
            line = replace_all(&COOKIE_HEADER, &line, |c| {
                if c[3].trim().starts_with("[REDACTED") {
                    return c[0].to_owned();
                }
                record(Kind::Cookie);
                format!("{}{}{}", &c[1], &c[2], Kind::Cookie.marker())
            });
            line = replace_all(&URL_USERINFO, &line, |c| {
                if c[3].is_empty() && c[2].is_empty() {
                    return c[0].to_owned();
                }
                record(Kind::UrlUserinfo);
                format!("{}{}@", &c[1], Kind::UrlUserinfo.marker())
            });
            line = replace_all(&PREFIXED, &line, |c| {
                let kind = match &c[1] {
                    "tet" => Kind::EnrollmentToken,
                    "tac" => Kind::AgentCredential,
                    _ => Kind::AdminToken,
                };
                record(kind);
                kind.marker()
            });
            line = redact_key_values(&line, &mut record);
            out.push_str(&line);
            out.push_str(newline);
        }
        (out, found)
    }
}

/// Replaces the value of each secret-looking key-value. A quoted value
/// runs to its closing quote, spaces included (`"password": "a b"`); an
/// unquoted one runs over spaces until a word that looks like the next key
/// (`password=a b retrying` loses all three words, `pwd=x user=y` keeps
/// `user=y`), and stops at `,`, `;`, `&` and brackets, so the next query
/// parameter or JSON field survives. Redacting a word too many is the
/// price of never leaving half a password behind.
fn redact_key_values(line: &str, record: &mut impl FnMut(Kind)) -> String {
    let mut out = String::with_capacity(line.len());
    let (mut copied, mut from) = (0, 0);
    while from <= line.len() {
        let Some(c) = KEY_VALUE.captures_at(line, from) else {
            break;
        };
        let (Some(whole), Some(key)) = (c.get(0), c.get(1)) else {
            break;
        };
        let quote = c.get(3).map_or("", |q| q.as_str());
        let start = whole.end();
        let end = value_end(line, start, quote);
        let value = &line[start..end];
        from = end.max(whole.end());
        if value.is_empty() || harmless(value) {
            continue;
        }
        let lower = key.as_str().to_ascii_lowercase();
        let kind = if lower.contains("pass") || lower.contains("pwd") {
            Kind::Password
        } else {
            Kind::Secret
        };
        record(kind);
        out.push_str(&line[copied..start]);
        out.push_str(&kind.marker());
        copied = end;
    }
    out.push_str(&line[copied..]);
    out
}

/// Where a value starting at `start` ends (see [`redact_key_values`]).
fn value_end(line: &str, start: usize, quote: &str) -> usize {
    if let Some(q) = quote.chars().next() {
        return line[start..].find(q).map_or(line.len(), |i| start + i);
    }
    let token = |s: &str| {
        s.find(|ch: char| ch.is_whitespace() || "\"',;&}]".contains(ch))
            .unwrap_or(s.len())
    };
    let mut end = start + token(&line[start..]);
    if end == start {
        return end;
    }
    loop {
        let after = &line[end..];
        let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
        if spaces == 0 {
            return end;
        }
        let next = &after[spaces..];
        let len = token(next);
        // An empty word (end of line, punctuation) or the next key ends it.
        if len == 0 || next[..len].contains([':', '=']) {
            return end;
        }
        end += spaces + len;
    }
}

/// Values that say whether a secret exists, not what it is.
fn harmless(value: &str) -> bool {
    value.starts_with("[REDACTED")
        || [
            "true", "false", "null", "none", "(none)", "present", "absent",
        ]
        .contains(&value.to_ascii_lowercase().as_str())
        || value.chars().all(|ch| ch.is_ascii_digit())
}

fn replace_all(
    re: &Regex,
    text: &str,
    mut f: impl FnMut(&regex::Captures<'_>) -> String,
) -> String {
    re.replace_all(text, |c: &regex::Captures<'_>| f(c))
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(found: &[Redaction]) -> Vec<(usize, Kind)> {
        found.iter().map(|r| (r.line, r.kind)).collect()
    }

    #[test]
    fn each_shape_is_redacted_and_recorded_by_line() {
        let r = Redactor::default();
        let text = "\
start
Authorization: Bearer tac_AbCdEf123456789
proxy-authorization: Basic YWxpY2U6czNjcmV0
enroll --token tet_Zz9_Yy8-Xx7Ww6
admin tta_QQQQQQQQQQQQ used
HTTPS_PROXY=http://alice:s3cretpw@proxy.corp:3128
db password=hunter2!! and secret: \"shh-its-a-secret\"
end";
        let (out, found) = r.redact("agent.log", text);
        for secret in [
            "tac_AbCdEf123456789",
            "YWxpY2U6czNjcmV0",
            "tet_Zz9_Yy8-Xx7Ww6",
            "tta_QQQQQQQQQQQQ",
            "alice:s3cretpw",
            "hunter2!!",
            "shh-its-a-secret",
        ] {
            assert!(!out.contains(secret), "{secret} survived:\n{out}");
        }
        assert_eq!(
            out.lines().count(),
            text.lines().count(),
            "no line added or removed"
        );
        assert_eq!(
            kinds(&found),
            vec![
                (2, Kind::AuthorizationHeader),
                (3, Kind::ProxyAuthorizationHeader),
                (4, Kind::EnrollmentToken),
                (5, Kind::AdminToken),
                (6, Kind::UrlUserinfo),
                (7, Kind::Password),
                (7, Kind::Secret),
            ]
        );
        assert!(
            out.contains("Authorization: [REDACTED:authorization_header]"),
            "{out}"
        );
        assert!(
            out.contains("http://[REDACTED:url_userinfo]@proxy.corp:3128"),
            "{out}"
        );
        assert!(found.iter().all(|f| f.file == "agent.log"));
    }

    #[test]
    fn private_key_blocks_are_removed_whole_also_inline() {
        let r = Redactor::default();
        let text = "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEsecretline1\nMIIEsecretline2\n-----END RSA PRIVATE KEY-----\nb \"k\":\"-----BEGIN PRIVATE KEY-----\\nMIIinline\\n-----END PRIVATE KEY-----\" c\n";
        let (out, found) = r.redact("state.json", text);
        assert!(!out.contains("MIIE") && !out.contains("MIIinline"), "{out}");
        assert_eq!(out.lines().count(), 7 - 1);
        assert!(out.starts_with("a\n[REDACTED:private_key]\n[REDACTED:private_key]\n"));
        assert!(
            out.contains("b \"k\":\"[REDACTED:private_key]\" c"),
            "{out}"
        );
        assert_eq!(
            kinds(&found),
            vec![(2, Kind::PrivateKey), (6, Kind::PrivateKey)]
        );
        // A public certificate is not a secret.
        let (cert, none) = r.redact(
            "x",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        assert!(none.is_empty() && cert.contains("MIIB"));
    }

    #[test]
    fn known_exact_secrets_are_redacted_wherever_they_appear() {
        let r = Redactor::new(vec![
            ("raw-credential-value-42".into(), Kind::AgentCredential),
            ("pr0xyPa55".into(), Kind::ProxyPassword),
            ("ab".into(), Kind::ProxyPassword),
        ]);
        let (out, found) = r.redact(
            "error.log",
            "the server refused raw-credential-value-42\nproxy said no to pr0xyPa55 twice: pr0xyPa55\nabc stays\n",
        );
        assert!(
            !out.contains("raw-credential") && !out.contains("pr0xyPa55"),
            "{out}"
        );
        assert!(
            out.contains("abc stays"),
            "short known strings are not searched: {out}"
        );
        assert_eq!(
            kinds(&found),
            vec![
                (1, Kind::AgentCredential),
                (2, Kind::ProxyPassword),
                (2, Kind::ProxyPassword)
            ]
        );
    }

    #[test]
    fn cookies_spaced_values_pgp_keys_and_database_url_passwords_are_redacted() {
        let r = Redactor::default();
        let text = "\
GET / Cookie: session=PlantedCookieValue1; theme=dark
HTTP/1.1 200 Set-Cookie: sid=PlantedSetCookie2; Path=/; HttpOnly
{\"headers\": {\"cookie\": \"auth=PlantedJsonCookie3\"}}
db password=PlantedSpaced alsosecret
config \"password\": \"Planted quoted value\", \"user\": \"bob\"
pwd: 'Planted single quoted'
-----BEGIN PGP PRIVATE KEY BLOCK-----
lQOYBGPlantedPgpMaterial
=PLNT
-----END PGP PRIVATE KEY BLOCK-----
DATABASE_URL=postgres://db.corp:5432/app?sslmode=require&password=PlantedDbUrlPw&user=app
jdbc:postgresql://db.corp/app?user=app&PASSWORD=PlantedJdbcPw
mysql://db.corp/app?Password=Planted%20Encoded
end
";
        let (out, found) = r.redact("agent.log", text);
        for secret in [
            "PlantedCookieValue1",
            "PlantedSetCookie2",
            "PlantedJsonCookie3",
            "PlantedSpaced",
            "alsosecret",
            "Planted quoted value",
            "quoted value",
            "single quoted",
            "PlantedPgpMaterial",
            "=PLNT",
            "PlantedDbUrlPw",
            "PlantedJdbcPw",
            "Encoded",
        ] {
            assert!(!out.contains(secret), "{secret} survived:\n{out}");
        }
        assert_eq!(out.lines().count(), text.lines().count(), "{out}");
        assert!(
            out.contains("\"user\": \"bob\""),
            "the next field is kept: {out}"
        );
        assert!(
            out.contains("&user=app"),
            "the next parameter is kept: {out}"
        );
        assert!(out.contains("?sslmode=require&password="), "{out}");
        let k = kinds(&found);
        assert!(k.contains(&(1, Kind::Cookie)), "{k:?}");
        assert!(k.contains(&(2, Kind::Cookie)), "{k:?}");
        assert!(k.contains(&(3, Kind::Cookie)), "{k:?}");
        assert!(k.contains(&(4, Kind::Password)), "{k:?}");
        assert!(k.contains(&(7, Kind::PrivateKey)), "{k:?}");
        assert!(k.contains(&(11, Kind::Password)), "{k:?}");
    }

    #[test]
    fn harmless_values_are_kept() {
        let r = Redactor::default();
        let text = "\"credential_present\": true, \"token_given\": false, token_count=3, proxy=(none)\nhttps://host.example/path user@host\n";
        let (out, found) = r.redact("doctor/report.json", text);
        assert_eq!(out, text);
        assert!(found.is_empty(), "{found:?}");
    }
}
