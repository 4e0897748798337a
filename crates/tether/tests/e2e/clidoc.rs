//! Shell completions and man pages of both binaries, checked by the tools
//! that consume them: bash completes from the generated script, zsh and
//! fish parse theirs, and groff renders every man page without a warning.

use std::path::Path;
use std::process::Command;

use crate::lab::{Scratch, agent_bin, tether_bin};

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// What bash offers after `words` (the last word is being completed).
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let func = format!("_{}", words[0].replace('-', "__"));
    let line = words.join(" ");
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; {} {} '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        words.len() - 1,
        line,
        func,
        words[0],
        words[words.len() - 1],
        words[words.len() - 2],
    );
    run_ok(Command::new("bash").arg("-c").arg(program))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_flags_of_both_binaries() {
    let dir = Scratch::new("clidoc-bash");
    for (bin, name) in [(tether_bin(), "tether"), (agent_bin(), "tether-agent")] {
        let script = dir.path().join(format!("{name}.bash"));
        let text = run_ok(Command::new(&bin).args(["completions", "bash"]));
        std::fs::write(&script, &text).expect("write script");
        run_ok(Command::new("bash").arg("-n").arg(&script));

        let top = bash_complete(&script, &[name, ""]);
        for sub in ["doctor", "completions", "man"] {
            assert!(
                top.iter().any(|w| w == sub),
                "{name}: {sub} missing from {top:?}"
            );
        }
        let doc = bash_complete(&script, &[name, "doctor", "--"]);
        assert!(
            doc.iter().any(|w| w == "--state-dir"),
            "{name} doctor flags: {doc:?}"
        );
    }
    let certs = bash_complete(&dir.path().join("tether.bash"), &["tether", "certs", "dep"]);
    assert_eq!(certs, vec!["deploy".to_string()]);
}

#[test]
fn zsh_and_fish_scripts_name_the_subcommands() {
    for bin in [tether_bin(), agent_bin()] {
        for shell in ["zsh", "fish", "elvish", "powershell"] {
            let text = run_ok(Command::new(&bin).args(["completions", shell]));
            assert!(text.contains("doctor"), "{bin:?} {shell}: no doctor");
        }
    }
    let out = Command::new(tether_bin())
        .args(["completions", "tcsh"])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn man_pages_render_without_warnings() {
    let dir = Scratch::new("clidoc-man");
    for (bin, name, sub) in [
        (tether_bin(), "tether", "tether-certs-deploy.1"),
        (agent_bin(), "tether-agent", "tether-agent-doctor.1"),
    ] {
        let out = dir.path().join(name);
        let said = run_ok(Command::new(&bin).arg("man").arg("--out").arg(&out));
        let pages: Vec<_> = std::fs::read_dir(&out)
            .expect("pages")
            .map(|e| e.expect("entry").path())
            .collect();
        assert!(
            said.contains(&format!("wrote {} man pages", pages.len())),
            "{said}"
        );
        assert!(out.join(format!("{name}.1")).exists());
        assert!(out.join(sub).exists(), "{sub} missing");
        for page in &pages {
            let render = Command::new("groff")
                .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                .arg(page)
                .output()
                .expect("groff runs");
            assert!(render.status.success(), "{page:?}");
            assert!(
                render.stderr.is_empty(),
                "{page:?}: {}",
                String::from_utf8_lossy(&render.stderr)
            );
        }
        let text = std::fs::read_to_string(out.join(sub)).expect("page");
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{sub} is not roff"
        );
    }
    let deploy =
        std::fs::read_to_string(dir.path().join("tether/tether-certs-deploy.1")).expect("page");
    assert!(deploy.contains("kind"), "the deploy page documents --kind");
    // Both binaries' pages go into one man directory (and two packages):
    // no name may be shared, or one page overwrites the other.
    let names = |name: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir.path().join(name))
            .expect("pages")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let shared: Vec<String> = names("tether")
        .intersection(&names("tether-agent"))
        .cloned()
        .collect();
    assert!(shared.is_empty(), "pages of both binaries: {shared:?}");
}
