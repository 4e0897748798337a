//! The table of known TLS interceptors (`interceptors.toml`, embedded).

use std::sync::OnceLock;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    /// The known products.
    interceptor: Vec<Interceptor>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Interceptor {
    /// The product's name, as reported.
    name: String,
    /// Case-insensitive substrings of a CA's DN that identify the product.
    #[serde(rename = "match")]
    patterns: Vec<String>,
}

fn table() -> &'static [Interceptor] {
    static TABLE: OnceLock<Vec<Interceptor>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // The file is part of the build and covered by a test below; an
        // unreadable table degrades to "no interceptor recognised".
        toml::from_str::<Table>(include_str!("interceptors.toml"))
            .map(|t| t.interceptor)
            .unwrap_or_default()
    })
}

/// The product whose CA name appears in `dn`, if any.
pub(crate) fn recognise(dn: &str) -> Option<&'static str> {
    let lower = dn.to_ascii_lowercase();
    table()
        .iter()
        .find(|i| i.patterns.iter().any(|p| lower.contains(p.as_str())))
        .map(|i| i.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_names_products() {
        let parsed: Table = toml::from_str(include_str!("interceptors.toml")).expect("valid table");
        assert!(parsed.interceptor.len() >= 10);
        assert_eq!(recognise("CN=mitmproxy, O=mitmproxy"), Some("mitmproxy"));
        assert_eq!(
            recognise("CN=Zscaler Intermediate Root CA (zscaler.net)"),
            Some("Zscaler")
        );
        assert_eq!(
            recognise("O=Fortinet, CN=FortiGate CA"),
            Some("Fortinet FortiGate")
        );
        assert_eq!(recognise("CN=Let's Encrypt R3"), None);
    }
}
