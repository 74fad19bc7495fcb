//! `nixtest plugin ...`

use super::{CliResult, Failure, PluginCommand};
use anyhow::Context;
use nixtest::plugin::{Plugin, PluginHost};
use nixtest::plugins;
use nixtest::registry::{Candidate, Outcome, Registry, RegistryError};
use nixtest::term;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

pub fn run(cmd: PluginCommand) -> CliResult {
    if let PluginCommand::New {
        name,
        path,
        sdk,
        from_failure,
    } = cmd
    {
        return match from_failure {
            Some(id) => super::scaffold::from_failure(&name, path, sdk, &id),
            None => super::scaffold::run(&name, path, sdk),
        };
    }
    let (paths, host) = super::plugin_host()?;
    let registry = Registry::new(&paths.data);
    match cmd {
        PluginCommand::Add { path, yes } => add(&host, &registry, &path, yes),
        PluginCommand::List => list(&host, &registry),
        PluginCommand::Info { name } => info(&host, &registry, &name),
        PluginCommand::Remove { name } => {
            let m = registry.remove(&name).map_err(registry_failure)?;
            println!("removed {} {}", term::line(&m.name), term::line(&m.version));
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Export { dir } => export(&host, &dir),
        PluginCommand::New { .. } => unreachable!("handled above"),
    }
}

fn registry_failure(e: RegistryError) -> Failure {
    match e {
        RegistryError::Write { .. } => Failure::infra(e),
        other => Failure::usage(other),
    }
}

fn builtin_set(host: &PluginHost) -> Result<Vec<Plugin>, Failure> {
    plugins::builtins(host)
        .context("the built-in plugins of this binary do not load")
        .map_err(Failure::infra)
}

fn add(host: &PluginHost, registry: &Registry, path: &std::path::Path, yes: bool) -> CliResult {
    let builtin_names: Vec<String> = builtin_set(host)?
        .into_iter()
        .map(|p| p.meta.name)
        .collect();
    let (candidates, pack) = registry
        .prepare(host, path, &builtin_names)
        .map_err(registry_failure)?;
    if let Some(pack) = &pack {
        println!(
            "heal pack {}: {}",
            term::clip(&pack.name, 64),
            term::clip(&pack.description, 1024)
        );
    }
    for c in &candidates {
        describe(c);
    }
    if candidates
        .iter()
        .all(|c| c.outcome == Outcome::AlreadyInstalled)
    {
        println!("nothing to do: already installed");
        return Ok(ExitCode::SUCCESS);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::usage(anyhow::anyhow!(
                "not installing without consent: there is no terminal to ask on; pass --yes \
                 after reading what the plugin asks for"
            )));
        }
        print!("Install? [y/N] ");
        std::io::stdout().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok();
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("not installed");
            return Ok(ExitCode::from(2));
        }
    }
    registry
        .install(&candidates, pack.as_ref().map(|p| p.name.as_str()))
        .map_err(registry_failure)?;
    for c in &candidates {
        let m = &c.plugin.meta;
        match &c.outcome {
            Outcome::New => println!("installed {} {}", m.name, m.version),
            Outcome::Upgrade(old) => println!("upgraded {} {} -> {}", m.name, old, m.version),
            Outcome::AlreadyInstalled => println!("{} {} already installed", m.name, m.version),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a plugin may do beyond reading what it is given, for people.
fn capabilities(m: &nixtest::plugin::PluginMeta) -> String {
    let caps: Vec<String> = m
        .capabilities
        .iter()
        .map(|c| match c {
            nixtest::plugin::Capability::Probe => {
                "probe (run read-only commands in the guest)".to_string()
            }
        })
        .collect();
    list_or_none(&caps)
}

/// The consent screen: everything the plugin said about itself is shown, control characters
/// made visible, so its description cannot redraw what nixtest prints around it.
fn describe(c: &Candidate) {
    let p = &c.plugin;
    let m = &p.meta;
    println!(
        "{} {} ({})",
        term::line(&m.name),
        m.version,
        p.world.as_str()
    );
    if !m.description.is_empty() {
        println!("  {}", term::line(&m.description));
    }
    println!("  categories:   {}", list_or_none(&m.categories));
    println!("  capabilities: {}", capabilities(m));
    println!("  contract:     nixtest:plugin@{}", p.contract);
    println!("  sha256:       {}", p.sha256);
    match &c.outcome {
        Outcome::New => {}
        Outcome::Upgrade(old) => println!("  upgrades the installed {old}"),
        Outcome::AlreadyInstalled => println!("  already installed"),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        term::line(&items.join(", ")).into_owned()
    }
}

fn list(host: &PluginHost, registry: &Registry) -> CliResult {
    println!(
        "{:<20} {:<9} {:<16} {:<13} {:<10} CATEGORIES",
        "NAME", "VERSION", "WORLD", "SHA256", "SOURCE"
    );
    for p in builtin_set(host)? {
        println!(
            "{:<20} {:<9} {:<16} {:<13} {:<10} {}",
            term::line(&p.meta.name),
            p.meta.version.to_string(),
            p.world.as_str(),
            &p.sha256[..12],
            "built-in",
            term::line(&p.meta.categories.join(","))
        );
    }
    for m in registry.list().map_err(registry_failure)? {
        println!(
            "{:<20} {:<9} {:<16} {:<13} {:<10} {}",
            term::clip(&m.name, 64),
            term::clip(&m.version, 32),
            term::clip(&m.world, 20),
            term::clip(&m.sha256, 12),
            term::clip(m.pack.as_deref().unwrap_or("installed"), 40),
            term::clip(&m.categories.join(","), 200)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn info(host: &PluginHost, registry: &Registry, name: &str) -> CliResult {
    let builtins = builtin_set(host)?;
    let plugin = match builtins.into_iter().find(|p| p.meta.name == name) {
        Some(p) => p,
        None => {
            let installed = registry.load_all(host).map_err(registry_failure)?;
            installed
                .plugins
                .into_iter()
                .find(|p| p.meta.name == name)
                .ok_or_else(|| Failure::usage(RegistryError::NotInstalled(name.to_string())))?
        }
    };
    let m = &plugin.meta;
    println!("name:         {}", term::line(&m.name));
    println!("version:      {}", m.version);
    println!("world:        {}", plugin.world.as_str());
    println!("description:  {}", term::line(&m.description));
    println!("categories:   {}", list_or_none(&m.categories));
    println!("capabilities: {}", capabilities(m));
    println!("contract:     nixtest:plugin@{}", plugin.contract);
    println!("sha256:       {}", plugin.sha256);
    println!("origin:       {}", term::line(&plugin.origin.to_string()));
    // Debug formatting escapes control characters already.
    println!("prefilter:    literals {:?}", m.literals);
    println!("              patterns {:?}", m.patterns);
    println!("              context lines {}", m.context_lines);
    Ok(ExitCode::SUCCESS)
}

fn export(host: &PluginHost, dir: &std::path::Path) -> CliResult {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .map_err(Failure::usage)?;
    let plugins = builtin_set(host)?;
    for ((_, bytes, _), p) in nixtest::builtin::all().iter().zip(&plugins) {
        let file = dir.join(format!("{}.wasm", p.meta.name));
        std::fs::write(&file, bytes)
            .with_context(|| format!("cannot write {}", file.display()))
            .map_err(Failure::usage)?;
        println!("{}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}
