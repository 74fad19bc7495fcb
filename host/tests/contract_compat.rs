//! Contract versions: a component built against 0.1.0 still loads, detects and heals through
//! the 0.1.0 bindings; one built with today's SDK speaks the current contract and carries
//! finding details through.

mod common;

use nixtest::facts::{Disk, GuestFacts};
use nixtest::plugin::{HostOptions, Origin, PluginHost, host_contract};

const LOG: &str = "::PHASE::install\ncopying path '/nix/store/abc-glibc'\nerror: writing to file: No space left on device\n::ERROR::install failed with exit code 1\n";

#[test]
fn a_0_1_0_component_still_loads_and_works() {
    let host = PluginHost::new(HostOptions::default()).unwrap();
    let old = host
        .load(
            &common::fixture("contract-v0-1-0"),
            "contract-v0-1-0",
            Origin::Builtin,
        )
        .unwrap();
    assert_eq!(old.contract, semver::Version::new(0, 1, 0));
    assert_eq!(old.meta.name, "old-contract");
    assert!(old.world.detects() && old.world.heals());

    let facts = GuestFacts {
        disks: vec![Disk {
            name: "vdb".into(),
            path: "/dev/vdb".into(),
            ..Disk::default()
        }],
        ..GuestFacts::default()
    };
    let report =
        nixtest::replay::replay(LOG.as_bytes(), std::slice::from_ref(&old), &facts, &[]).unwrap();
    assert!(report.faults.is_empty(), "{:?}", report.faults);
    let found: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.detector == "old-contract")
        .collect();
    assert_eq!(found.len(), 1, "{:?}", report.findings);
    assert_eq!(found[0].category, "disk-full");
    assert_eq!(found[0].lines, [3]);
    assert!(found[0].details.is_empty());
    let action = report
        .actions
        .iter()
        .find(|a| a.healer == "old-contract")
        .expect("the 0.1.0 healer answered");
    assert_eq!(action.name, "free-space");
    // The 0.1.0 context arrived whole: one disk, the field 0.2.0 dropped sent empty.
    assert!(
        action
            .description
            .contains("1 disks, 0 reachability entries"),
        "{}",
        action.description
    );
}

#[test]
fn a_current_component_speaks_the_current_contract_with_details() {
    let host = PluginHost::new(HostOptions::default()).unwrap();
    assert_eq!(host_contract(), semver::Version::new(0, 2, 0));
    let plugins = nixtest::plugins::builtins(&host).unwrap();
    assert!(plugins.iter().all(|p| p.contract == host_contract()));
    let log = "error: unable to download 'http://cache.example.org/nix-cache-info': Could not resolve host: cache.example.org (6)\n";
    let report =
        nixtest::replay::replay(log.as_bytes(), &plugins, &GuestFacts::default(), &[]).unwrap();
    let net = report
        .findings
        .iter()
        .find(|f| f.category == "network" && f.permanent)
        .expect("a network finding");
    assert!(
        net.details
            .contains(&("host".to_string(), "cache.example.org".to_string())),
        "{:?}",
        net.details
    );
    assert!(
        net.details
            .contains(&("cause".to_string(), "dns".to_string()))
    );
}
