//! The redaction corpus: secrets planted in every kind of file the bundle
//! reads (config, credential copies in logs, state, service env, shell env,
//! every log) go through the real bundler; none survives in any byte of the
//! extracted bundle, and REDACTIONS.json lists each one by file and line.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use tether_agent::World;
use tether_agent::bundle::{CollectOptions, collect};
use tether_wire::SystemClock;

/// A planted secret: its value and the bundle file it must be redacted in.
struct Planted {
    secret: &'static str,
    file: &'static str,
}

const CREDENTIAL: &str = "rawcred-Zx81-planted-value";

fn extract(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut out = Vec::new();
    for entry in archive.entries().expect("a tar inside") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("reads");
        out.push((name, data));
    }
    out
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle} not planted"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_never_survive_and_each_is_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path();
    let units = tempfile::tempdir().expect("tempdir");
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");

    let config = "server = \"https://127.0.0.1:1\"\nname = \"lab\"\n\
        ca_fingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n\
        proxy = \"http://proxyuser:Pr0xyPassw0rd-cfg@127.0.0.1:9\"\n";
    std::fs::write(state.join("agent.toml"), config).expect("writes");
    tether_agent::credential::save(
        state,
        &tether_agent::credential::Credential::new(CREDENTIAL),
    )
    .expect("saves");
    let state_json = serde_json::json!({
        "agent_id": "7b0e3c1e-8f2a-4c1b-9d4e-2f1a3b4c5d6e",
        "enrolled_at": "2026-05-17T12:00:00Z",
        "installed_at": "2026-05-17T11:00:00Z",
        "server": "https://127.0.0.1:1/",
        "last_successful_contact": "2026-05-17T12:30:00Z",
        "last_errors": {
            "transport": {"code": "TETHER-E3202", "at": "2026-05-17T12:31:00Z",
                "message": "proxy http://bob:StatePassw0rd@proxy.corp:3128 said 407"},
            "enroll": {"code": "TETHER-E2103", "at": "2026-05-17T11:59:00Z",
                "message": "token tet_PlantedEnrollToken123456 expired"}
        }
    });
    let state_text = serde_json::to_string_pretty(&state_json).expect("json") + "\n";
    std::fs::write(state.join("state.json"), &state_text).expect("writes");
    let service_env = "# proxy\nHTTPS_PROXY='http://svc:Serv1cePassw0rd@127.0.0.1:9'\n";
    std::fs::write(state.join("service.env"), service_env).expect("writes");
    std::fs::write(
        units.path().join("tether-agent.service"),
        format!(
            "[Service]\nEnvironment=\"NO_PROXY=localhost\"\nEnvironmentFile=-{}\n",
            state.join("service.env").display()
        ),
    )
    .expect("writes");
    let agent_log = "\
2026-05-17T12:00:00Z  INFO tether_agent::run: agent starting\n\
2026-05-17T12:00:01Z DEBUG hyper: Authorization: Bearer tta_PlantedAdminToken987654321\n\
2026-05-17T12:00:02Z DEBUG proxy: Proxy-Authorization: Basic cHJveHk6UGxhbnRlZEJhc2lj\n\
2026-05-17T12:00:03Z  WARN db: connect failed password=PlantedDbPassw0rd! retrying\n\
2026-05-17T12:00:04Z  INFO oauth: client_secret: PlantedClientSecret42\n\
-----BEGIN EC PRIVATE KEY-----\n\
MHcCAQEEIPlantedKeyMaterialAAAA\n\
MHcCAQEEIPlantedKeyMaterialBBBB\n\
-----END EC PRIVATE KEY-----\n\
2026-05-17T12:00:05Z  INFO fetch: GET https://carol:PlantedUrlPassw0rd@files.corp/x\n\
2026-05-17T12:00:06Z ERROR tether_agent::run: the server rejected rawcred-Zx81-planted-value\n\
2026-05-17T12:00:07Z  WARN other: saw tac_OtherAgentCredential123456 in a header\n\
2026-05-17T12:00:08Z DEBUG hyper: Cookie: session=PlantedCookieSession; theme=dark\n\
2026-05-17T12:00:09Z DEBUG hyper: Set-Cookie: sid=PlantedSetCookieSid; Path=/; HttpOnly\n\
2026-05-17T12:00:10Z  WARN ldap: bind failed password=PlantedSpacedWord1 PlantedSpacedWord2\n\
-----BEGIN PGP PRIVATE KEY BLOCK-----\n\
lQOYBGPlantedPgpKeyMaterial\n\
-----END PGP PRIVATE KEY BLOCK-----\n\
2026-05-17T12:00:11Z ERROR db: DATABASE_URL=postgres://db.corp/app?sslmode=require&password=PlantedDbUrlPassword&user=app\n";
    std::fs::write(logs.join("agent.log"), agent_log).expect("writes");
    std::fs::write(
        logs.join("install.log"),
        "2026-05-17T11:00:00Z  INFO tether::install: enroll --token tet_PlantedInstallToken0000 ok\n",
    )
    .expect("writes");
    std::fs::write(
        logs.join("error.log"),
        "2026-05-17T12:00:08Z ERROR x: login passwd: PlantedPasswdValue refused\n",
    )
    .expect("writes");

    let world = World::fixed(
        Arc::new(SystemClock),
        &[("HTTPS_PROXY", "http://shell:Sh3llPassw0rd@127.0.0.1:9")],
    );
    let opts = CollectOptions {
        state_dir: state.to_owned(),
        unit_dir: units.path().to_owned(),
        log_lines: 500,
        deadline: Duration::from_secs(3),
        run_commands: true,
    };
    let (bundle, report) = collect(&opts, &world).await.expect("bundle builds");
    assert!(report.is_some(), "the doctor ran");

    let files = extract(&bundle.bytes);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "MANIFEST.json", "the manifest comes first");
    assert_eq!(names[1], "REDACTIONS.json");
    for expected in [
        "doctor/report.txt",
        "doctor/report.json",
        "posture.json",
        "state.json",
        "config/agent.toml",
        "config/effective.txt",
        "service/tether-agent.service",
        "service/service.env",
        "logs/install.log",
        "logs/agent.log",
        "logs/error.log",
        "network/proxy-env.txt",
        "network/resolv.conf",
        "network/hosts",
        "network/ip-addr.txt",
        "network/ip-route.txt",
        "system/os-release",
        "system/uname.txt",
        "system/df.txt",
        "system/time-sync.txt",
        "timeline.txt",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.ends_with("credential")),
        "the credential file is never bundled: {names:?}"
    );

    let planted = [
        Planted {
            secret: "Pr0xyPassw0rd-cfg",
            file: "config/agent.toml",
        },
        Planted {
            secret: CREDENTIAL,
            file: "logs/agent.log",
        },
        Planted {
            secret: "StatePassw0rd",
            file: "state.json",
        },
        Planted {
            secret: "tet_PlantedEnrollToken123456",
            file: "state.json",
        },
        Planted {
            secret: "Serv1cePassw0rd",
            file: "service/service.env",
        },
        Planted {
            secret: "Sh3llPassw0rd",
            file: "network/proxy-env.txt",
        },
        Planted {
            secret: "tta_PlantedAdminToken987654321",
            file: "logs/agent.log",
        },
        Planted {
            secret: "cHJveHk6UGxhbnRlZEJhc2lj",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedDbPassw0rd!",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedClientSecret42",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedKeyMaterialAAAA",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedKeyMaterialBBBB",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedUrlPassw0rd",
            file: "logs/agent.log",
        },
        Planted {
            secret: "tac_OtherAgentCredential123456",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedCookieSession",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedSetCookieSid",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedSpacedWord1",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedSpacedWord2",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedPgpKeyMaterial",
            file: "logs/agent.log",
        },
        Planted {
            secret: "PlantedDbUrlPassword",
            file: "logs/agent.log",
        },
        Planted {
            secret: "tet_PlantedInstallToken0000",
            file: "logs/install.log",
        },
        Planted {
            secret: "PlantedPasswdValue",
            file: "logs/error.log",
        },
    ];
    // No byte of any file holds any planted secret (nor the credential).
    for (name, data) in &files {
        for p in &planted {
            assert!(
                !data
                    .windows(p.secret.len())
                    .any(|w| w == p.secret.as_bytes()),
                "{} survived in {name}",
                p.secret
            );
        }
    }
    assert!(
        !bundle
            .bytes
            .windows(CREDENTIAL.len())
            .any(|w| w == CREDENTIAL.as_bytes()),
        "not even in the compressed bytes"
    );

    // REDACTIONS.json lists each one where it was, without its value.
    let redactions_text = &files[1].1;
    let redactions: Vec<serde_json::Value> =
        serde_json::from_slice(redactions_text).expect("REDACTIONS.json is JSON");
    let listed: BTreeMap<(String, u64), Vec<String>> =
        redactions.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry((
                r["file"].as_str().expect("file").to_owned(),
                r["line"].as_u64().expect("line"),
            ))
            .or_default()
            .push(r["kind"].as_str().expect("kind").to_owned());
            m
        });
    let originals: BTreeMap<&str, String> = BTreeMap::from([
        ("config/agent.toml", config.to_owned()),
        ("state.json", state_text.clone()),
        ("service/service.env", service_env.to_owned()),
        ("logs/agent.log", agent_log.to_owned()),
        (
            "logs/install.log",
            std::fs::read_to_string(logs.join("install.log")).expect("reads"),
        ),
        (
            "logs/error.log",
            std::fs::read_to_string(logs.join("error.log")).expect("reads"),
        ),
    ]);
    for p in &planted {
        let line = match originals.get(p.file) {
            // A private key block is recorded once, at its BEGIN line.
            Some(text) if p.secret.starts_with("PlantedKeyMaterial") => {
                line_of(text, "BEGIN EC PRIVATE KEY")
            }
            Some(text) if p.secret.starts_with("PlantedPgp") => {
                line_of(text, "BEGIN PGP PRIVATE KEY BLOCK")
            }
            Some(text) => line_of(text, p.secret),
            None => {
                assert!(
                    listed.keys().any(|(f, _)| f == p.file),
                    "{} in {} is not listed in REDACTIONS.json: {listed:?}",
                    p.secret,
                    p.file
                );
                continue;
            }
        };
        assert!(
            listed.contains_key(&(p.file.to_owned(), line as u64)),
            "{} ({}:{line}) is not listed in REDACTIONS.json: {listed:?}",
            p.secret,
            p.file
        );
    }
    assert_eq!(redactions.len(), bundle.redactions.len());

    // The manifest lists every other file with its size and hash.
    let manifest: serde_json::Value = serde_json::from_slice(&files[0].1).expect("manifest");
    assert_eq!(manifest["schema_version"], 1);
    let in_manifest: Vec<&str> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    for (name, _) in &files[1..] {
        assert!(
            in_manifest.contains(&name.as_str()),
            "{name} not in the manifest"
        );
    }
    assert!(manifest["verdict"]["status"].is_string(), "{manifest}");
    assert_eq!(
        manifest["redactions"].as_u64(),
        Some(redactions.len() as u64)
    );
    // What was redacted stays readable around the marker.
    let agent_log_bundled = String::from_utf8_lossy(
        &files
            .iter()
            .find(|(n, _)| n == "logs/agent.log")
            .expect("agent.log")
            .1,
    )
    .into_owned();
    assert!(agent_log_bundled.contains("Authorization: [REDACTED:authorization_header]"));
    assert!(agent_log_bundled.contains("https://[REDACTED:url_userinfo]@files.corp/x"));
    assert_eq!(agent_log_bundled.lines().count(), agent_log.lines().count());
}
