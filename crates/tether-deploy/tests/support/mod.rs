//! What the deploy tests share: the old set a web server serves (another
//! CA's certificate, as if installed by hand) and the new material (key and
//! CSR made here, signed by a fresh built-in CA whose root is offline).

#![allow(dead_code)]

use std::path::Path;

use tether_deploy::{Material, Report, keygen};
use tether_pki::ca::{self, CaFiles, RootKeyPlace};
use tether_pki::{Kek, csr};
use tether_testlab::pki::Ca;

/// A PEM set's four files, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub cert: String,
    pub key: String,
    pub chain: String,
    pub full: String,
}

/// Which set the files on disk are.
#[derive(Debug, PartialEq, Eq)]
pub enum OnDisk {
    Old,
    New,
    Mixed(String),
}

pub fn full(cert: &str, chain: &str) -> String {
    format!("{}\n{}\n", cert.trim_end(), chain.trim_end())
}

pub fn fp_of(pem_text: &str) -> String {
    tether_x509::fingerprint(&pem::parse(pem_text).expect("pem").into_contents())
}

/// The code of a failed deploy's report, "" when it did not fail.
pub fn code(r: &Report) -> &str {
    r.failure.as_ref().map(|f| f.code.as_str()).unwrap_or("")
}

/// The old set for `names`, from another CA.
pub fn old_set(names: &[&str]) -> Files {
    let old_ca = Ca::root("Old Root");
    let leaf = old_ca.issue(names);
    let chain = String::from_utf8(old_ca.pem()).expect("utf8");
    Files {
        cert: leaf.pem().to_owned(),
        key: leaf.key_pem().to_owned(),
        full: full(leaf.pem(), &chain),
        chain,
    }
}

/// A new key and CSR for `names`, signed by a built-in CA created under
/// `base` (`server/ca`, the root's key at `offline/root.pem`).
pub fn issued(base: &Path, names: &[&str]) -> (Material, Files) {
    let kek = Kek::generate_file(&base.join("server/ca.kek")).expect("kek");
    let issuing = ca::init(
        &CaFiles::new(base.join("server/ca")),
        &kek,
        "Lab",
        RootKeyPlace::Offline(&base.join("offline/root.pem")),
        time::OffsetDateTime::now_utc(),
    )
    .expect("ca");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let kc = keygen::generate(&names).expect("keygen");
    let req = csr::check(kc.csr_pem.as_bytes(), &names).expect("csr");
    let issued = issuing
        .sign(&req, 30, time::OffsetDateTime::now_utc())
        .expect("sign");
    let material = Material {
        cert_pem: issued.cert_pem.clone(),
        chain_pem: issued.chain_pem.clone(),
        key_pem: kc.key_pem().to_owned(),
    };
    let files = Files {
        cert: issued.cert_pem.clone(),
        key: kc.key_pem().to_owned(),
        chain: issued.chain_pem.clone(),
        full: full(&issued.cert_pem, &issued.chain_pem),
    };
    (material, files)
}
