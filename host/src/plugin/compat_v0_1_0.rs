//! Contract 0.1.0, still accepted: its components run through their own bindings, and these
//! conversions put their types into the current contract's (and back), so the rest of the
//! host speaks only the current one. What 0.1.0 lacks is empty: a 0.1.0 finding has no
//! details; what 0.1.0 has and the current contract dropped is sent empty (reachability).

use super::bindings::current::nixtest::plugin::{probe as cur_probe, types as cur};
use super::bindings::v0_1_0::nixtest::plugin::{probe as old_probe, types as old};
use super::sandbox::SandboxState;

pub fn event(e: cur::Event) -> old::Event {
    old::Event {
        kind: match e.kind {
            cur::EventKind::Phase => old::EventKind::Phase,
            cur::EventKind::Success => old::EventKind::Success,
            cur::EventKind::Error => old::EventKind::Error,
            cur::EventKind::Warning => old::EventKind::Warning,
            cur::EventKind::Context => old::EventKind::Context,
            cur::EventKind::Progress => old::EventKind::Progress,
            cur::EventKind::Metric => old::EventKind::Metric,
            cur::EventKind::Raw => old::EventKind::Raw,
        },
        phase: e.phase,
        message: e.message,
        line: e.line,
        fields: e
            .fields
            .into_iter()
            .map(|f| old::Field {
                key: f.key,
                value: f.value,
            })
            .collect(),
    }
}

fn severity_from(s: old::Severity) -> cur::Severity {
    match s {
        old::Severity::Info => cur::Severity::Info,
        old::Severity::Warning => cur::Severity::Warning,
        old::Severity::Error => cur::Severity::Error,
        old::Severity::Fatal => cur::Severity::Fatal,
    }
}

fn severity_to(s: cur::Severity) -> old::Severity {
    match s {
        cur::Severity::Info => old::Severity::Info,
        cur::Severity::Warning => old::Severity::Warning,
        cur::Severity::Error => old::Severity::Error,
        cur::Severity::Fatal => old::Severity::Fatal,
    }
}

pub fn finding_from(f: old::Finding) -> cur::Finding {
    cur::Finding {
        category: f.category,
        severity: severity_from(f.severity),
        summary: f.summary,
        lines: f.lines,
        permanent: f.permanent,
        details: Vec::new(),
    }
}

pub fn finding_to(f: cur::Finding) -> old::Finding {
    old::Finding {
        category: f.category,
        severity: severity_to(f.severity),
        summary: f.summary,
        lines: f.lines,
        permanent: f.permanent,
    }
}

pub fn heal_context(cx: cur::HealContext) -> old::HealContext {
    let f = cx.facts;
    old::HealContext {
        facts: old::GuestFacts {
            disks: f
                .disks
                .into_iter()
                .map(|d| old::Disk {
                    name: d.name,
                    path: d.path,
                    size_bytes: d.size_bytes,
                    partitions: d.partitions,
                    mountpoints: d.mountpoints,
                    boot_medium: d.boot_medium,
                    removable: d.removable,
                })
                .collect(),
            mounts: f
                .mounts
                .into_iter()
                .map(|m| old::Mount {
                    path: m.path,
                    device: m.device,
                    fs_type: m.fs_type,
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
            resolvers: f.resolvers,
            reachability: Vec::new(),
            substituters: f.substituters,
        },
        phase: cx.phase,
        config: cx
            .config
            .into_iter()
            .map(|c| old::ConfigFile {
                path: c.path,
                content: c.content,
            })
            .collect(),
        evidence: cx.evidence,
        attempt: cx.attempt,
    }
}

pub fn action_from(a: old::HealingAction) -> cur::HealingAction {
    cur::HealingAction {
        name: a.name,
        description: a.description,
        confidence: a.confidence,
        commands: a.commands,
        config_changes: a
            .config_changes
            .into_iter()
            .map(|c| cur::ConfigChange {
                path: c.path,
                content: c.content,
            })
            .collect(),
        retry_phase: a.retry_phase,
    }
}

pub fn metadata_from(m: old::Metadata) -> cur::Metadata {
    cur::Metadata {
        name: m.name,
        version: m.version,
        description: m.description,
        categories: m.categories,
        capabilities: m
            .capabilities
            .into_iter()
            .map(|c| match c {
                old::Capability::Probe => cur::Capability::Probe,
            })
            .collect(),
        literals: m.literals,
        patterns: m.patterns,
        context_lines: m.context_lines,
    }
}

/// A 0.1.0 plugin's probes go through the same sandbox as everyone's.
impl old_probe::Host for SandboxState {
    fn run(&mut self, command: String) -> Result<old_probe::ProbeOutput, String> {
        cur_probe::Host::run(self, command).map(|o| old_probe::ProbeOutput {
            status: o.status,
            stdout: o.stdout,
            stderr: o.stderr,
        })
    }
}
