//! Architecture invariant: the endpoint binary carries no server or database
//! code, and no definitions publisher or key management, not even
//! transitively.

const FORBIDDEN: [&str; 9] = [
    "tether-server",
    "tether-store",
    "tether-store-sql",
    "sqlx",
    "axum",
    // The signed repository, publish, key generation and rotation.
    "tether-defs-publish",
    // The test lab (proxies, web servers, a test PKI) is a dev-dependency only.
    "tether-testlab",
    // The built-in CA (its keys, CSR signing): server and CLI only. The
    // agent makes its key and CSR with tether-deploy.
    "tether-pki",
    // The OpenAPI schemas: tether-wire's `openapi` feature is the server's.
    "utoipa",
];

#[test]
fn tether_agent_depends_on_no_server_or_database_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "tether-agent-bin",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"tether-agent"),
        "the tree lists the agent library: {text}"
    );
    assert!(
        names.contains(&"tether-client"),
        "the tree lists the client: {text}"
    );
    assert!(
        names.contains(&"tether-x509"),
        "the tree lists the certificate classifier the doctor shares: {text}"
    );
    assert!(
        names.contains(&"tether-defs"),
        "the tree lists the definitions updater: {text}"
    );
    assert!(
        names.contains(&"tether-scan"),
        "the tree lists the discovery scanner: {text}"
    );
    assert!(
        names.contains(&"tether-deploy"),
        "the tree lists the deploy transaction: {text}"
    );
    for bad in FORBIDDEN {
        // Exact crate names: `tether-store` must not match `tether-store-sql`
        // by prefix, and neither may appear at all. (`tether-defs` is
        // allowed; `tether-defs-publish` is listed by its full name.)
        let found: Vec<&&str> = names
            .iter()
            .filter(|n| **n == bad || n.starts_with(&format!("{bad}-")))
            .collect();
        assert!(
            found.is_empty(),
            "{bad} is in tether-agent's dependency tree: {found:?}"
        );
    }
}
