//! Asking healers: for a finding, every healer plugin that covers its category proposes
//! actions; they are ranked by confidence (weighted by how well each action worked before,
//! when a history is given). Applying them is the orchestrator's business.

use crate::actions::HealingAction;
use crate::findings::Finding;
use crate::monitor::FaultRecord;
use crate::plugin::{GuestProbe, HealRequest, Plugin, PluginFault, PluginInstance};
use std::sync::Arc;

struct Slot {
    name: String,
    categories: Vec<String>,
    instance: Option<PluginInstance>,
}

/// The healer instances of one run.
pub struct Healers {
    slots: Vec<Slot>,
    faults: Vec<FaultRecord>,
}

impl Healers {
    pub fn new(plugins: &[Plugin]) -> Result<Self, (String, PluginFault)> {
        let mut slots = Vec::new();
        for p in plugins.iter().filter(|p| p.world.heals()) {
            let instance = p.instantiate().map_err(|f| (p.meta.name.clone(), f))?;
            slots.push(Slot {
                name: p.meta.name.clone(),
                categories: p.meta.categories.clone(),
                instance: Some(instance),
            });
        }
        Ok(Healers {
            slots,
            faults: Vec::new(),
        })
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

    pub fn faults(&self) -> &[FaultRecord] {
        &self.faults
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
            if !slot.categories.iter().any(|c| c == &finding.category) {
                continue;
            }
            let Some(instance) = &mut slot.instance else {
                continue;
            };
            match instance.heal(finding, index, request) {
                Ok(mut a) => actions.append(&mut a),
                Err(fault) => {
                    tracing::warn!(plugin = %slot.name, "healer disabled for this run: {fault}");
                    self.faults.push(FaultRecord {
                        message: format!("plugin {} {fault}", slot.name),
                        plugin: slot.name.clone(),
                        fault,
                        line: finding.lines.first().copied().unwrap_or(0),
                    });
                    slot.instance = None;
                }
            }
        }
        rank(&mut actions, weight);
        actions
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
