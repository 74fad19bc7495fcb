//! Conversions between the generated WIT types and the host's own.

use super::bindings::current::nixtest::plugin::types as wit;
use super::{Capability, HealRequest, PluginMeta};
use crate::actions::{Confidence, ConfigChange, HealingAction};
use crate::facts::GuestFacts;
use crate::findings::{Finding, Severity};
use nixtest_events::{Event, EventKind};

/// Caps on a plugin's metadata: it is untrusted input, read before the consent screen.
#[derive(Debug, Clone, Copy)]
pub struct MetadataCaps {
    pub name: usize,
    pub version: usize,
    pub description: usize,
    pub categories: usize,
    pub category: usize,
    pub capabilities: usize,
    pub literals: usize,
    pub literal: usize,
    pub literal_total: usize,
    pub patterns: usize,
    pub pattern: usize,
    pub pattern_total: usize,
    pub context_lines: u32,
}

impl Default for MetadataCaps {
    fn default() -> Self {
        MetadataCaps {
            name: 64,
            version: 64,
            description: 1024,
            categories: 32,
            category: 64,
            capabilities: 8,
            literals: 256,
            literal: 256,
            literal_total: 16 << 10,
            patterns: 128,
            pattern: 1024,
            pattern_total: 32 << 10,
            context_lines: 64,
        }
    }
}

/// A plugin name: what the store, the report and the terminal can use as is.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MetadataCaps::default().name
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin name {:?} must be 1 to 64 lowercase letters, digits, - and _, starting with \
             a letter or digit",
            crate::term::clip(name, 80)
        ))
    }
}

/// A category: a short word of lowercase letters, digits and dashes.
pub fn check_category(c: &str) -> Result<(), String> {
    let ok = !c.is_empty()
        && c.len() <= MetadataCaps::default().category
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "category {:?} must be 1 to 64 lowercase letters, digits, - and _",
            crate::term::clip(c, 80)
        ))
    }
}

fn over(what: &str, got: usize, cap: usize) -> Result<(), String> {
    if got > cap {
        Err(format!("{what} is {got}, over the limit of {cap}"))
    } else {
        Ok(())
    }
}

pub fn metadata_size(m: &wit::Metadata) -> usize {
    m.name.len()
        + m.version.len()
        + m.description.len()
        + m.categories.iter().map(String::len).sum::<usize>()
        + m.capabilities.len()
        + m.literals.iter().map(String::len).sum::<usize>()
        + m.patterns.iter().map(String::len).sum::<usize>()
}

/// Checks every field against `caps` before anything is compiled or shown.
pub fn metadata(m: wit::Metadata, caps: &MetadataCaps) -> Result<PluginMeta, String> {
    over("the name's length", m.name.len(), caps.name)?;
    let name = m.name.trim().to_string();
    check_name(&name)?;
    over("the version's length", m.version.len(), caps.version)?;
    let version = semver::Version::parse(&m.version).map_err(|e| {
        format!(
            "version {:?} is not semver: {e}",
            crate::term::clip(&m.version, 64)
        )
    })?;
    over(
        "the description's length",
        m.description.len(),
        caps.description,
    )?;
    over(
        "the number of categories",
        m.categories.len(),
        caps.categories,
    )?;
    for c in &m.categories {
        check_category(c)?;
    }
    over(
        "the number of capabilities",
        m.capabilities.len(),
        caps.capabilities,
    )?;
    over("the number of literals", m.literals.len(), caps.literals)?;
    for l in &m.literals {
        over("a literal's length", l.len(), caps.literal)?;
    }
    over(
        "the literals' total length",
        m.literals.iter().map(String::len).sum(),
        caps.literal_total,
    )?;
    over("the number of patterns", m.patterns.len(), caps.patterns)?;
    for p in &m.patterns {
        over("a pattern's length", p.len(), caps.pattern)?;
    }
    over(
        "the patterns' total length",
        m.patterns.iter().map(String::len).sum(),
        caps.pattern_total,
    )?;
    if m.context_lines > caps.context_lines {
        return Err(format!(
            "context-lines is {}, over the limit of {}",
            m.context_lines, caps.context_lines
        ));
    }
    let mut capabilities = Vec::new();
    for c in m.capabilities {
        let c = match c {
            wit::Capability::Probe => Capability::Probe,
        };
        if !capabilities.contains(&c) {
            capabilities.push(c);
        }
    }
    let mut categories = m.categories;
    categories.dedup();
    Ok(PluginMeta {
        name,
        version,
        description: m.description.trim().to_string(),
        categories,
        capabilities,
        literals: m.literals.into_iter().filter(|l| !l.is_empty()).collect(),
        patterns: m.patterns,
        context_lines: m.context_lines,
    })
}

pub fn event(e: &Event) -> wit::Event {
    wit::Event {
        kind: match e.kind {
            EventKind::Phase => wit::EventKind::Phase,
            EventKind::Success => wit::EventKind::Success,
            EventKind::Error => wit::EventKind::Error,
            EventKind::Warning => wit::EventKind::Warning,
            EventKind::Context => wit::EventKind::Context,
            EventKind::Progress => wit::EventKind::Progress,
            EventKind::Metric => wit::EventKind::Metric,
            EventKind::Raw => wit::EventKind::Raw,
        },
        phase: e.phase.to_string(),
        message: e.message.clone(),
        line: e.line,
        fields: e
            .fields
            .iter()
            .map(|(k, v)| wit::Field {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
    }
}

fn severity(s: wit::Severity) -> Severity {
    match s {
        wit::Severity::Info => Severity::Info,
        wit::Severity::Warning => Severity::Warning,
        wit::Severity::Error => Severity::Error,
        wit::Severity::Fatal => Severity::Fatal,
    }
}

fn severity_to_wit(s: Severity) -> wit::Severity {
    match s {
        Severity::Info => wit::Severity::Info,
        Severity::Warning => wit::Severity::Warning,
        Severity::Error => wit::Severity::Error,
        Severity::Fatal => wit::Severity::Fatal,
    }
}

/// Evidence lines one finding may carry; more are dropped (the earliest are kept).
pub const MAX_EVIDENCE_LINES: usize = 256;
/// A finding's summary, at most (longer ones are cut).
pub const MAX_SUMMARY: usize = 512;
/// A finding's details: how many, a key's length, a value's length (longer values are cut).
pub const MAX_DETAILS: usize = 16;
pub const MAX_DETAIL_KEY: usize = 64;
pub const MAX_DETAIL_VALUE: usize = 512;
/// Actions one heal call may return.
pub const MAX_ACTIONS_PER_HEAL: usize = 32;
/// Per action: guest commands, config changes, and their sizes.
pub const MAX_COMMANDS: usize = 16;
pub const MAX_COMMAND_BYTES: usize = 4096;
pub const MAX_CONFIG_CHANGES: usize = 16;
pub const MAX_CONFIG_CONTENT: usize = 256 << 10;
const MAX_ACTION_NAME: usize = 64;
const MAX_ACTION_DESCRIPTION: usize = 1024;

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
    s
}

pub fn finding(f: wit::Finding, detector: &str) -> Result<Finding, String> {
    check_category(&f.category)?;
    let mut lines = f.lines;
    lines.sort_unstable();
    lines.dedup();
    lines.truncate(MAX_EVIDENCE_LINES);
    over("a finding's details", f.details.len(), MAX_DETAILS)?;
    let details = f
        .details
        .into_iter()
        .map(|d| {
            over("a detail's key", d.key.len(), MAX_DETAIL_KEY)?;
            Ok((d.key, cut(d.value, MAX_DETAIL_VALUE)))
        })
        .collect::<Result<_, String>>()?;
    Ok(Finding {
        detector: detector.to_string(),
        category: f.category.into(),
        severity: severity(f.severity),
        permanent: f.permanent,
        summary: cut(f.summary, MAX_SUMMARY),
        lines,
        details,
    })
}

pub fn finding_size(f: &wit::Finding) -> usize {
    f.category.len()
        + f.summary.len()
        + f.lines.len() * 4
        + f.details
            .iter()
            .map(|d| d.key.len() + d.value.len())
            .sum::<usize>()
}

pub fn finding_to_wit(f: &Finding) -> wit::Finding {
    wit::Finding {
        category: f.category.to_string(),
        severity: severity_to_wit(f.severity),
        summary: f.summary.clone(),
        lines: f.lines.clone(),
        permanent: f.permanent,
        details: f
            .details
            .iter()
            .map(|(key, value)| wit::Field {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

pub fn action(
    a: wit::HealingAction,
    healer: &str,
    finding: usize,
) -> Result<HealingAction, String> {
    let name = a.name.trim().to_string();
    if name.is_empty() || name.len() > MAX_ACTION_NAME {
        return Err(format!(
            "an action's name must be 1 to {MAX_ACTION_NAME} bytes"
        ));
    }
    over("the number of commands", a.commands.len(), MAX_COMMANDS)?;
    for c in &a.commands {
        over("a command's length", c.len(), MAX_COMMAND_BYTES)?;
        if c.contains('\0') {
            return Err("a command contains a NUL byte".into());
        }
    }
    over(
        "the number of config changes",
        a.config_changes.len(),
        MAX_CONFIG_CHANGES,
    )?;
    for c in &a.config_changes {
        over(
            "a config change's size",
            c.content.len(),
            MAX_CONFIG_CONTENT,
        )?;
    }
    Ok(HealingAction {
        healer: healer.to_string(),
        finding,
        name,
        description: cut(a.description, MAX_ACTION_DESCRIPTION),
        confidence: Confidence::new(a.confidence),
        commands: a.commands,
        config_changes: a
            .config_changes
            .into_iter()
            .map(|c| ConfigChange {
                path: c.path,
                content: c.content,
            })
            .collect(),
        retry_phase: a.retry_phase.map(|p| cut(p, 128)),
    })
}

pub fn action_size(a: &wit::HealingAction) -> usize {
    a.name.len()
        + a.description.len()
        + a.commands.iter().map(String::len).sum::<usize>()
        + a.config_changes
            .iter()
            .map(|c| c.path.len() + c.content.len())
            .sum::<usize>()
        + a.retry_phase.as_ref().map_or(0, String::len)
}

pub fn heal_context(cx: &HealRequest<'_>) -> wit::HealContext {
    wit::HealContext {
        facts: facts(cx.facts),
        phase: cx.phase.to_string(),
        config: cx
            .config
            .iter()
            .map(|(path, content)| wit::ConfigFile {
                path: path.clone(),
                content: content.clone(),
            })
            .collect(),
        evidence: cx.evidence.to_vec(),
        attempt: cx.attempt,
    }
}

fn facts(f: &GuestFacts) -> wit::GuestFacts {
    wit::GuestFacts {
        disks: f
            .disks
            .iter()
            .map(|d| wit::Disk {
                name: d.name.clone(),
                path: d.path.clone(),
                size_bytes: d.size_bytes,
                partitions: d.partitions,
                mountpoints: d.mountpoints.clone(),
                boot_medium: d.boot_medium,
                removable: d.removable,
            })
            .collect(),
        mounts: f
            .mounts
            .iter()
            .map(|m| wit::Mount {
                path: m.path.clone(),
                device: m.device.clone(),
                fs_type: m.fs_type.clone(),
                size_bytes: m.size_bytes,
                free_bytes: m.free_bytes,
                free_inodes: m.free_inodes,
                read_only: m.read_only,
            })
            .collect(),
        memory_total_bytes: f.memory_total_bytes,
        memory_available_bytes: f.memory_available_bytes,
        swap_total_bytes: f.swap_total_bytes,
        swap_free_bytes: f.swap_free_bytes,
        cpus: f.cpus,
        resolvers: f.resolvers.clone(),
        substituters: f.substituters.clone(),
    }
}
