//! Asking healers: for a finding, every healer plugin that covers its category proposes
//! actions; they are ranked by confidence (weighted by how well each action worked before,
//! when a history is given). Vetting and applying them is the healing loop's business.
//!
//! A healer that cannot start or faults is disabled for the run and recorded; the others are
//! still asked. Every probe a healer makes, allowed or refused, is kept for the report.

use super::{Proposal, Propose};
use crate::actions::HealingAction;
use crate::findings::Finding;
use crate::history::History;
use crate::monitor::FaultRecord;
use crate::plugin::{GuestProbe, HealRequest, Plugin, PluginInstance, ProbeRecord};
use std::sync::{Arc, Mutex, PoisonError};

struct Slot {
    name: String,
    categories: Vec<String>,
    instance: Option<PluginInstance>,
}

/// The healer instances of one run.
pub struct Healers {
    slots: Vec<Slot>,
    faults: Vec<FaultRecord>,
    probes: Vec<ProbeRecord>,
}

impl Healers {
    pub fn new(plugins: &[Plugin]) -> Self {
        let mut slots = Vec::new();
        let mut faults = Vec::new();
        for p in plugins.iter().filter(|p| p.world.heals()) {
            let instance = match p.instantiate() {
                Ok(i) => Some(i),
                Err(fault) => {
                    tracing::warn!(plugin = %p.meta.name, "healer disabled for this run: {fault}");
                    faults.push(FaultRecord::new(&p.meta.name, fault, 0, String::new()));
                    None
                }
            };
            slots.push(Slot {
                name: p.meta.name.clone(),
                categories: p.meta.categories.clone(),
                instance,
            });
        }
        Healers {
            slots,
            faults,
            probes: Vec::new(),
        }
    }

    /// Lets healers that declared the `probe` capability run read-only commands in the guest
    /// (the others are refused by their sandbox whatever is attached).
    pub fn attach_probe(&mut self, probe: Arc<dyn GuestProbe>) {
        for slot in &mut self.slots {
            if let Some(instance) = &mut slot.instance {
                instance.set_probe(Some(probe.clone()));
            }
        }
    }

    /// What each running healer printed (bounded), for those that printed anything.
    pub fn outputs(&self) -> Vec<(String, String)> {
        self.slots
            .iter()
            .filter_map(|s| s.instance.as_ref())
            .map(|i| (i.name().to_string(), i.output()))
            .filter(|(_, o)| !o.is_empty())
            .collect()
    }

    /// Records a fault from before the run (an installed healer that did not load).
    pub fn seed_fault(&mut self, fault: FaultRecord) {
        self.faults.push(fault);
    }

    pub fn faults(&self) -> &[FaultRecord] {
        &self.faults
    }

    /// Every probe healers asked for so far, in order.
    pub fn probes(&self) -> &[ProbeRecord] {
        &self.probes
    }

    /// Every healer's actions for `finding` (index `index` in the run's findings), best first.
    /// `weight` scales an action's confidence by its track record (1.0 when unknown).
    pub fn propose(
        &mut self,
        index: usize,
        finding: &Finding,
        request: &HealRequest<'_>,
        weight: impl Fn(&HealingAction) -> f32,
    ) -> Vec<HealingAction> {
        let mut actions = Vec::new();
        for slot in &mut self.slots {
            if !slot
                .categories
                .iter()
                .any(|c| finding.category == c.as_str())
            {
                continue;
            }
            let Some(instance) = &mut slot.instance else {
                continue;
            };
            let result = instance.heal(finding, index, request);
            self.probes.extend(instance.take_probes());
            match result {
                Ok(mut a) => actions.append(&mut a),
                Err(fault) => {
                    tracing::warn!(plugin = %slot.name, "healer disabled for this run: {fault}");
                    let line = finding.lines.first().copied().unwrap_or(0);
                    self.faults
                        .push(FaultRecord::new(&slot.name, fault, line, instance.output()));
                    slot.instance = None;
                }
            }
        }
        rank(&mut actions, weight);
        actions
    }
}

/// The run's healers as the healing loop asks them: ranked with the healing history, and
/// handing over the probes and faults of each answer.
pub struct Ranked<'a> {
    pub healers: Healers,
    history: &'a Mutex<History>,
    probes_seen: usize,
    faults_seen: usize,
}

impl<'a> Ranked<'a> {
    /// Faults from before the run (healers that did not load) count as handed over: the
    /// caller reports them at the start.
    pub fn new(healers: Healers, history: &'a Mutex<History>) -> Self {
        let faults_seen = healers.faults().len();
        Ranked {
            healers,
            history,
            probes_seen: 0,
            faults_seen,
        }
    }
}

impl Propose for Ranked<'_> {
    fn propose(&mut self, index: usize, finding: &Finding, request: &HealRequest<'_>) -> Proposal {
        let history = self.history;
        let actions = self.healers.propose(index, finding, request, |a| {
            history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .weight(&a.healer, &a.name)
        });
        let probes = self.healers.probes()[self.probes_seen..].to_vec();
        let faults = self.healers.faults()[self.faults_seen..].to_vec();
        self.probes_seen += probes.len();
        self.faults_seen += faults.len();
        Proposal {
            actions,
            probes,
            faults,
        }
    }
}

/// Sorts best first by weighted confidence; ties keep the plugins' order.
pub fn rank(actions: &mut [HealingAction], weight: impl Fn(&HealingAction) -> f32) {
    actions.sort_by(|a, b| {
        let (wa, wb) = (
            a.confidence.get() * weight(a),
            b.confidence.get() * weight(b),
        );
        wb.total_cmp(&wa)
    });
}
