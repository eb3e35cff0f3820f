//! The configuration reference, `docs/configuration.md`, generated from the clap definitions (the same text as
//! `--help`), so it cannot drift: `a_stale_configuration_reference_fails` compares the file with what this module
//! renders, and `UPDATE_DOCS=1 cargo test --lib config::reference` rewrites it.

use std::fmt::Write as _;

use clap::{Arg, Command};

/// Where the reference lives, relative to the workspace root.
pub const PATH: &str = "docs/configuration.md";

/// The whole page: both binaries, every command, every option.
pub fn render() -> String {
    let service = <super::Cli as clap::CommandFactory>::command();
    let gateway = <trading_gateway::cli::Cli as clap::CommandFactory>::command();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Every option of both binaries: its flag, its environment variable and its default. Generated from the \
         same definitions as `--help` (`src/config/`, `grpc-gateway/src/cli.rs`) by `src/config/reference.rs`; \
         a test fails when this page is stale (regenerate it with `UPDATE_DOCS=1 cargo test --lib \
         config::reference`). `.env.sample` shows a starting environment. A flag wins over its variable.\n",
    );
    section(&mut out, "trading-monitor", &service, 2, &[]);
    let mut earlier: Vec<(String, &Command)> = Vec::new();
    for sub in service.get_subcommands() {
        let title = format!("trading-monitor {}", sub.get_name());
        section(&mut out, &title, sub, 3, &earlier);
        earlier.push((title, sub));
    }
    section(&mut out, "trading-gateway", &gateway, 2, &[]);
    out
}

/// The options a command documents (those with a long flag that are not hidden).
fn options(command: &Command) -> Vec<&Arg> {
    command.get_arguments().filter(|a| !a.is_hide_set() && a.get_long().is_some()).collect()
}

/// One command's heading, description and table of options (none for a command without options of its own; a
/// pointer for one with the same options as an `earlier` one).
fn section(out: &mut String, title: &str, command: &Command, level: usize, earlier: &[(String, &Command)]) {
    let _ = write!(out, "\n{} `{title}`\n\n", "#".repeat(level));
    if let Some(about) = command.get_about() {
        let _ = writeln!(out, "{}\n", sentence(&about.to_string()));
    }
    let args = options(command);
    if args.is_empty() {
        return;
    }
    let ids = |args: &[&Arg]| args.iter().map(|a| a.get_id().clone()).collect::<Vec<_>>();
    if let Some((same, _)) = earlier.iter().find(|(_, c)| ids(&options(c)) == ids(&args)) {
        let _ = writeln!(out, "Takes the same options as `{same}`.");
        return;
    }
    table(out, &args);
    // Subcommands repeat their binary's notes (the traces' variables); say them once, under the binary.
    if let Some(after) = command.get_after_help().filter(|_| level == 2) {
        let _ = writeln!(out, "\n{}", sentence(&after.to_string()));
    }
}

/// The options as tables, one per help heading.
fn table(out: &mut String, args: &[&Arg]) {
    let mut heading = None;
    let mut table_open = false;
    for arg in args {
        if arg.get_help_heading() != heading || !table_open {
            heading = arg.get_help_heading();
            if let Some(h) = heading {
                let _ = write!(out, "{}**{h}**\n\n", if table_open { "\n" } else { "" });
            } else if table_open {
                out.push('\n');
            }
            out.push_str("| Flag | Environment variable | Default | What it does |\n|---|---|---|---|\n");
            table_open = true;
        }
        let _ = writeln!(out, "| {} | {} | {} | {} |", flag(arg), env(arg), default(arg), help(arg));
    }
}

fn flag(arg: &Arg) -> String {
    let mut names = vec![format!("`--{}`", arg.get_long().unwrap_or_default())];
    names.extend(arg.get_visible_aliases().unwrap_or_default().into_iter().map(|a| format!("`--{a}`")));
    names.join(", ")
}

fn env(arg: &Arg) -> String {
    arg.get_env().map(|e| format!("`{}`", e.to_string_lossy())).unwrap_or_default()
}

fn default(arg: &Arg) -> String {
    let values: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    if values.is_empty() || arg.is_hide_default_value_set() { String::new() } else { format!("`{}`", values.join(",")) }
}

fn help(arg: &Arg) -> String {
    let text = arg.get_long_help().or_else(|| arg.get_help()).map(ToString::to_string).unwrap_or_default();
    let mut text = sentence(&text);
    let possible = arg.get_possible_values();
    let values: Vec<&str> = possible.iter().filter(|v| !v.is_hide_set()).map(|v| v.get_name()).collect();
    // A boolean flag's `true`/`false` says nothing its default does not.
    if !values.is_empty() && values != ["true", "false"] {
        let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        let _ = write!(text, " One of {}.", values.join(", "));
    }
    text.replace('|', "\\|")
}

/// Paragraphs joined into one line (a table cell), ending with a full stop (clap drops a summary's own).
fn sentence(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if !line.is_empty() && !line.ends_with(['.', ')', '!', '?']) {
        line.push('.');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_configuration_reference_fails() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PATH);
        let rendered = render();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &rendered).expect("write the configuration reference");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == rendered,
            "{PATH} does not match the options' definitions: regenerate it with \
             `UPDATE_DOCS=1 cargo test --lib config::reference` and commit it"
        );
    }

    #[test]
    fn every_option_of_serve_is_in_the_reference() {
        let page = render();
        for flag in ["`--database-url`", "`--redis-url`", "`--jwt-secret`", "`--watch-heartbeat`", "`--upstream`"] {
            assert!(page.contains(flag), "{flag}");
        }
        assert!(page.contains("`TM_CACHE_TTL`") && page.contains("`5s`"));
    }
}
