//! Command output kept in a step's record: bounded, and with private keys
//! and password-like values cut out, since the record travels to the
//! control plane and into history.

/// At most this many bytes of a command's output are kept.
pub const MAX_OUTPUT: usize = 4096;

const SECRET_WORDS: [&str; 5] = ["password", "passwd", "secret", "token", "passphrase"];

/// The output with PEM private keys and `word=value` / `word: value` secrets
/// replaced, cut to [`MAX_OUTPUT`] bytes on a character boundary.
pub fn redact(text: &str) -> String {
    let mut out = String::new();
    let mut in_key = false;
    for line in text.lines() {
        if line.contains("-----BEGIN") && line.contains("PRIVATE KEY") {
            in_key = true;
            out.push_str("[private key redacted]\n");
            continue;
        }
        if in_key {
            if line.contains("-----END") {
                in_key = false;
            }
            continue;
        }
        out.push_str(&redact_line(line));
        out.push('\n');
    }
    if out.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("\n[output cut]");
    }
    out
}

fn redact_line(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    for word in SECRET_WORDS {
        if let Some(pos) = lower.find(word) {
            let after = pos + word.len();
            let rest = &line[after..];
            let sep = rest
                .char_indices()
                .find(|(_, c)| *c == '=' || *c == ':')
                .filter(|(i, _)| rest[..*i].trim().is_empty());
            if let Some((i, _)) = sep {
                return format!("{}[redacted]", &line[..after + i + 1]);
            }
        }
    }
    line.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_passwords_are_cut_out() {
        let text = "ok\n-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\nuser password=hunter2 x\nToken: abc\nsafe=1\n";
        let r = redact(text);
        assert!(
            !r.contains("MIGH") && !r.contains("hunter2") && !r.contains("abc"),
            "{r}"
        );
        assert!(
            r.contains("[private key redacted]") && r.contains("safe=1"),
            "{r}"
        );
        let long = "é".repeat(5000);
        assert!(redact(&long).len() <= MAX_OUTPUT + 20);
    }
}
