//! `osctl container lint [--rootfs DIR] [--fatal-warnings] [--list]
//! [--skip NAME]... [--no-truncate] [--format human|json]`: the last `RUN` of
//! a Containerfile. The checks are osctl-lint's; this file parses and
//! reports.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use osctl_lint::{LINTS, Level, Lint, Report, Rootfs};

#[derive(Subcommand)]
pub enum ContainerCommand {
    /// Check an image's root filesystem for what would stop it booting or
    /// updating as an OS (meant as the last RUN of a Containerfile).
    Lint(LintArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LintFormat {
    Human,
    Json,
}

#[derive(Args)]
pub struct LintArgs {
    /// The image's root filesystem (default: / — inside the build).
    #[arg(long, default_value = "/")]
    pub rootfs: PathBuf,
    /// Fail on warnings too.
    #[arg(long)]
    pub fatal_warnings: bool,
    /// Print every lint (name, level, what it checks, how to fix) and exit.
    #[arg(long)]
    pub list: bool,
    /// Leave out a lint, by name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub skip: Vec<String>,
    /// Print every problem, not the first few of each lint.
    #[arg(long)]
    pub no_truncate: bool,
    #[arg(long, value_enum, default_value = "human")]
    pub format: LintFormat,
}

/// Problems printed per lint unless `--no-truncate`.
const SHOWN_PER_LINT: usize = 5;

pub fn run(cmd: ContainerCommand) -> anyhow::Result<ExitCode> {
    let ContainerCommand::Lint(args) = cmd;
    if args.list {
        print!("{}", list(args.format)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rootfs = Rootfs::open(&args.rootfs)?;
    let report = osctl_lint::run(&rootfs, &args.skip)?;
    match args.format {
        LintFormat::Human => print!("{}", human(&report, args.no_truncate)),
        LintFormat::Json => println!("{}", serde_json::to_string(&json(&report))?),
    }
    Ok(if report.fails(args.fatal_warnings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn level(l: Level) -> &'static str {
    match l {
        Level::Fatal => "fatal",
        Level::Warning => "warning",
    }
}

fn lint_json(lint: &Lint) -> serde_json::Value {
    serde_json::json!({
        "name": lint.name,
        "level": lint.level,
        "summary": lint.summary,
        "fix": lint.fix,
    })
}

/// `--list`: one block per lint, or a JSON array.
fn list(format: LintFormat) -> anyhow::Result<String> {
    Ok(match format {
        LintFormat::Json => {
            let all: Vec<_> = LINTS.iter().map(lint_json).collect();
            format!("{}\n", serde_json::to_string(&all)?)
        }
        LintFormat::Human => LINTS
            .iter()
            .map(|l| {
                format!(
                    "{} ({})\n  {}\n  fix: {}\n",
                    l.name,
                    level(l.level),
                    l.summary,
                    l.fix
                )
            })
            .collect(),
    })
}

/// The human report: each lint that found something, its problems (capped),
/// its fix; then one summary line.
fn human(report: &Report, no_truncate: bool) -> String {
    let mut out = String::new();
    for o in report.outcomes.iter().filter(|o| !o.problems.is_empty()) {
        out += &format!(
            "{} {}: {}\n",
            level(o.lint.level),
            o.lint.name,
            o.lint.summary
        );
        let shown = if no_truncate {
            o.problems.len()
        } else {
            SHOWN_PER_LINT
        };
        for p in o.problems.iter().take(shown) {
            out += &format!("  {p}\n");
        }
        if o.problems.len() > shown {
            out += &format!(
                "  …and {} more (--no-truncate shows all)\n",
                o.problems.len() - shown
            );
        }
        out += &format!("  fix: {}\n", o.lint.fix);
    }
    let (fatal, warnings) = (report.failed(Level::Fatal), report.failed(Level::Warning));
    let skipped = if report.skipped.is_empty() {
        String::new()
    } else {
        format!(", skipped: {}", report.skipped.join(", "))
    };
    out += &format!(
        "{} lints: {fatal} fatal, {warnings} warning{}{skipped}\n",
        report.outcomes.len(),
        if warnings == 1 { "" } else { "s" }
    );
    out
}

fn json(report: &Report) -> serde_json::Value {
    let lints: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| {
            let mut v = lint_json(o.lint);
            v["problems"] = serde_json::json!(o.problems);
            v
        })
        .collect();
    serde_json::json!({
        "lints": lints,
        "skipped": report.skipped,
        "fatal": report.failed(Level::Fatal),
        "warnings": report.failed(Level::Warning),
    })
}
