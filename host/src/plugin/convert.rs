//! Conversions between the generated WIT types and the host's own.

use super::bindings::nixtest::plugin::types as wit;
use super::{Capability, HealRequest, PluginMeta};
use crate::actions::{Confidence, ConfigChange, HealingAction};
use crate::facts::GuestFacts;
use crate::findings::{Finding, Severity};
use nixtest_events::{Event, EventKind};

pub fn metadata(m: wit::Metadata) -> Result<PluginMeta, String> {
    let name = m.name.trim().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "plugin name {:?} must be non-empty and use only letters, digits, - and _",
            m.name
        ));
    }
    let version = semver::Version::parse(&m.version)
        .map_err(|e| format!("version {:?} is not semver: {e}", m.version))?;
    for p in &m.patterns {
        regex::Regex::new(p).map_err(|e| format!("prefilter pattern {p:?} is invalid: {e}"))?;
    }
    Ok(PluginMeta {
        name,
        version,
        description: m.description,
        categories: m.categories,
        capabilities: m
            .capabilities
            .into_iter()
            .map(|c| match c {
                wit::Capability::Probe => Capability::Probe,
            })
            .collect(),
        literals: m.literals.into_iter().filter(|l| !l.is_empty()).collect(),
        patterns: m.patterns,
        context_lines: m.context_lines.min(64),
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

pub fn finding(f: wit::Finding, detector: &str) -> Finding {
    let mut lines = f.lines;
    lines.sort_unstable();
    lines.dedup();
    Finding {
        detector: detector.to_string(),
        category: f.category,
        severity: severity(f.severity),
        permanent: f.permanent,
        summary: f.summary,
        lines,
    }
}

pub fn finding_size(f: &wit::Finding) -> usize {
    f.category.len() + f.summary.len() + f.lines.len() * 4
}

pub fn finding_to_wit(f: &Finding) -> wit::Finding {
    wit::Finding {
        category: f.category.clone(),
        severity: severity_to_wit(f.severity),
        summary: f.summary.clone(),
        lines: f.lines.clone(),
        permanent: f.permanent,
    }
}

pub fn action(a: wit::HealingAction, healer: &str, finding: usize) -> HealingAction {
    HealingAction {
        healer: healer.to_string(),
        finding,
        name: a.name,
        description: a.description,
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
        retry_phase: a.retry_phase,
    }
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
        reachability: f
            .reachability
            .iter()
            .map(|r| wit::Reachability {
                target: r.target.clone(),
                reachable: r.reachable,
                detail: r.detail.clone(),
            })
            .collect(),
        substituters: f.substituters.clone(),
    }
}
