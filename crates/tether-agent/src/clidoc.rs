//! Shell completions and man pages, generated from the clap definitions of
//! whichever binary calls them (`tether` or `tether-agent`), so they cannot
//! drift from the flags the binary really takes. Packages run
//! `BIN completions SHELL` and `BIN man --out DIR` at build time.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use clap_complete::Shell;

/// `completions SHELL`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// The shells clap_complete writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

impl From<CompletionShell> for Shell {
    fn from(shell: CompletionShell) -> Self {
        match shell {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
            CompletionShell::Elvish => Shell::Elvish,
            CompletionShell::Powershell => Shell::PowerShell,
        }
    }
}

/// `man --out DIR`.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing): one
    /// `BIN.1` and one `BIN-SUB[-SUB…].1` per subcommand.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Writes the completion script for `cmd` to `out`.
pub fn completions(
    mut cmd: clap::Command,
    shell: CompletionShell,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(Shell::from(shell), &mut cmd, name.clone(), &mut script);
    if shell == CompletionShell::Bash {
        script = bash_hyphen_fix(&name, script);
    }
    out.write_all(&script)
}

/// clap_complete 4.6's bash script never completes past the first
/// subcommand of a binary whose name holds a hyphen (`tether-agent doctor
/// --<TAB>` offers nothing; clap-rs/clap#6421, open): its loop spells the
/// state `tether__agent__subcmd__doctor` while its case arms spell it
/// `tether__subcmd__agent__subcmd__doctor`. Respell the arms the loop's way.
/// Harmless once upstream agrees with itself (the arms' spelling is gone).
fn bash_hyphen_fix(name: &str, script: Vec<u8>) -> Vec<u8> {
    if !name.contains('-') {
        return script;
    }
    let Ok(text) = String::from_utf8(script.clone()) else {
        return script;
    };
    let wrong = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", name.replace('-', "__"));
    text.replace(&wrong, &right).into_bytes()
}

/// Writes section-1 man pages for `cmd` and every (visible) subcommand
/// into `dir`; returns the files written, the top page first.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = cmd;
    // Subcommand pages are named after their full path (`tether-certs-deploy`).
    cmd.build();
    let mut written = Vec::new();
    write_tree(&cmd, cmd.get_name(), dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: &clap::Command,
    page: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(page.to_uppercase())
        .render(&mut bytes)
        .with_context(|| format!("cannot render the man page of {page}"))?;
    let path = dir.join(format!("{page}.1"));
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_tree(sub, &format!("{page}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_arms_of_a_hyphenated_binary_are_respelled_the_loops_way() {
        let cmd = clap::Command::new("my-app")
            .subcommand(clap::Command::new("thunder").arg(clap::Arg::new("x").long("lightning")));
        let mut out = Vec::new();
        completions(cmd, CompletionShell::Bash, &mut out).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("cmd=\"my__app__subcmd__thunder\""), "{text}");
        assert!(text.contains("my__app__subcmd__thunder)"), "{text}");
        assert!(!text.contains("my__subcmd__app"), "{text}");
    }

    #[test]
    fn a_name_without_hyphen_is_left_as_generated() {
        let script = b"tether__subcmd__agent".to_vec();
        assert_eq!(bash_hyphen_fix("tether", script.clone()), script);
    }
}
