//! Write nixtest plugins in plain Rust.
//!
//! A plugin is a WebAssembly component that nixtest loads in a sandbox. It can be a
//! **detector** (it reads the install's output as [`Event`]s and reports [`Finding`]s), a
//! **healer** (it is given a finding and the guest's [`GuestFacts`] and proposes ranked
//! [`HealingAction`]s), or both. You implement [`Plugin`] plus [`Detector`] and/or
//! [`Healer`], and call one export macro; the generated bindings stay out of sight.
//!
//! ```no_run
//! use nixtest_plugin_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct SwapCheck {
//!     seen: u32,
//! }
//!
//! impl Plugin for SwapCheck {
//!     fn metadata() -> Metadata {
//!         Metadata::new("swap-check", env!("CARGO_PKG_VERSION"))
//!             .description("Notices the kernel's OOM killer")
//!             .categories(["oom"])
//!             .literals(["Out of memory"])
//!     }
//! }
//!
//! impl Detector for SwapCheck {
//!     fn feed(&mut self, events: &[Event]) -> Vec<Finding> {
//!         let mut found = Vec::new();
//!         for e in events {
//!             if e.message.contains("Out of memory: Killed process") {
//!                 self.seen += 1;
//!                 found.push(
//!                     Finding::new("oom", Severity::Error, "the OOM killer ended a process")
//!                         .line(e.line),
//!                 );
//!             }
//!         }
//!         found
//!     }
//! }
//!
//! impl Healer for SwapCheck {
//!     fn heal(&mut self, finding: &Finding, cx: &HealContext) -> Vec<HealingAction> {
//!         let mib = cx.facts.swap_size_mib(2048);
//!         vec![HealingAction::new("add-swap", "add a swap file", 0.8)
//!             .command(format!("fallocate -l {mib}M /swapfile && chmod 600 /swapfile"))
//!             .command("mkswap /swapfile && swapon /swapfile")
//!             .retry(&cx.phase)]
//!     }
//! }
//!
//! nixtest_plugin_sdk::export_plugin!(SwapCheck);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (the crate is a `cdylib`),
//! and install `target/wasm32-wasip2/release/NAME.wasm` with `nixtest plugin add`. In your own
//! `cargo test`, [`testing`] runs the same code natively over a recorded log.

mod helpers;
pub mod shell;
pub mod testing;

#[doc(hidden)]
pub mod bindings {
    //! Generated bindings, one module per role world; the healer's share the detector's
    //! `types`. A plugin with both roles exports both worlds, and the component linker joins
    //! them into the `full-plugin` world.
    pub mod detector {
        wit_bindgen::generate!({
            path: "../wit/current",
            world: "detector-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_detector_world",
            default_bindings_module: "nixtest_plugin_sdk::bindings::detector",
        });
    }
    pub mod healer {
        wit_bindgen::generate!({
            path: "../wit/current",
            world: "healer-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_healer_world",
            default_bindings_module: "nixtest_plugin_sdk::bindings::healer",
            // wit-bindgen wants the version in this key; it refuses a key that names another
            // version than wit/current's, so the two cannot drift apart.
            with: {
                "nixtest:plugin/types@0.2.0": crate::bindings::detector::nixtest::plugin::types,
            },
        });
    }
}

pub use bindings::detector::nixtest::plugin::types::{
    Capability, ConfigChange, ConfigFile, Disk, Event, EventKind, Field, Finding, GuestFacts,
    HealContext, HealingAction, Metadata, Mount, Severity,
};
pub use bindings::healer::nixtest::plugin::probe::ProbeOutput;
pub use helpers::{Rule, RuleSet};
/// The categories of findings: the built-in ones, or a plugin's own (`Category::Custom`).
pub use nixtest_events::Category;
pub use nixtest_events::Gate;
/// The regex crate, for rules (the same version the SDK's helpers use).
pub use regex;

/// The contract this SDK builds against, as `wit/current/plugin.wit` names its package.
pub fn contract_version() -> &'static str {
    include_str!("../../wit/current/plugin.wit")
        .lines()
        .find_map(|l| l.trim().strip_prefix("package nixtest:plugin@"))
        .map(|v| v.trim_end_matches(';'))
        .expect("the contract names its package")
}

/// Everything a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::{
        Capability, Category, ConfigChange, ConfigFile, Detector, Disk, Event, EventKind, Finding,
        GuestFacts, HealContext, Healer, HealingAction, Metadata, Mount, Plugin, Rule, RuleSet,
        Severity,
    };
}

/// Who the plugin is. Every plugin implements this.
pub trait Plugin {
    fn metadata() -> Metadata;
}

/// Reads events, reports findings. One value lives for the whole run (`Default` makes it), so
/// fields carry state from batch to batch.
pub trait Detector: Plugin + Default + 'static {
    /// A batch of events, in order. Return the findings they complete.
    fn feed(&mut self, events: &[Event]) -> Vec<Finding>;

    /// The stream ended. Return what only the end makes certain (say, a retry that never
    /// recovered).
    fn finish(&mut self) -> Vec<Finding> {
        Vec::new()
    }
}

/// Proposes healing actions for a finding. Return them in any order; the host ranks them by
/// confidence and by how well each has worked before.
pub trait Healer: Plugin + Default + 'static {
    fn heal(&mut self, finding: &Finding, cx: &HealContext) -> Vec<HealingAction>;
}

/// Runs a read-only command in the guest. Only for plugins that declare
/// [`Capability::Probe`] and export a healer; the host refuses it otherwise, and allows only
/// read-only programs (lsblk, df, findmnt, cat, ls, test, ...) with plain arguments. In a
/// native test, [`testing::with_probe`] answers instead of a guest.
pub fn probe(command: &str) -> Result<ProbeOutput, String> {
    #[cfg(target_family = "wasm")]
    return bindings::healer::nixtest::plugin::probe::run(command);
    #[cfg(not(target_family = "wasm"))]
    return testing::native_probe(command);
}

#[doc(hidden)]
pub mod __private {
    //! What the export macros expand to. Not part of the API.
    use std::any::Any;
    use std::cell::RefCell;

    thread_local! {
        // One plugin value per instance; the host makes one instance per run.
        static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    pub fn with_state<T: Default + 'static, R>(f: impl FnOnce(&mut T) -> R) -> R {
        STATE.with(|cell| {
            let mut slot = cell.borrow_mut();
            let state = slot.get_or_insert_with(|| Box::new(T::default()));
            let state = state
                .downcast_mut::<T>()
                .expect("a plugin exports exactly one type");
            f(state)
        })
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_detector_role {
    ($t:ty) => {
        const _: () = {
            struct __NixtestDetector;
            impl $crate::bindings::detector::exports::nixtest::plugin::detector::Guest
                for __NixtestDetector
            {
                fn describe() -> $crate::Metadata {
                    <$t as $crate::Plugin>::metadata()
                }
                fn feed(
                    events: ::std::vec::Vec<$crate::Event>,
                ) -> ::std::vec::Vec<$crate::Finding> {
                    $crate::__private::with_state::<$t, _>(|p| $crate::Detector::feed(p, &events))
                }
                fn finish() -> ::std::vec::Vec<$crate::Finding> {
                    $crate::__private::with_state::<$t, _>(|p| $crate::Detector::finish(p))
                }
            }
            // Native builds (the author's `cargo test`) export nothing: symbol names like
            // `nixtest:plugin/detector@0.1.0#describe` only make sense in a component.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::detector::__export_detector_world!(__NixtestDetector with_types_in $crate::bindings::detector);
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_healer_role {
    ($t:ty) => {
        const _: () = {
            struct __NixtestHealer;
            impl $crate::bindings::healer::exports::nixtest::plugin::healer::Guest
                for __NixtestHealer
            {
                fn describe() -> $crate::Metadata {
                    <$t as $crate::Plugin>::metadata()
                }
                fn heal(
                    finding: $crate::Finding,
                    cx: $crate::HealContext,
                ) -> ::std::vec::Vec<$crate::HealingAction> {
                    $crate::__private::with_state::<$t, _>(|p| {
                        $crate::Healer::heal(p, &finding, &cx)
                    })
                }
            }
            // Native builds (the author's `cargo test`) export nothing: symbol names like
            // `nixtest:plugin/healer@0.1.0#describe` only make sense in a component.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::healer::__export_healer_world!(__NixtestHealer with_types_in $crate::bindings::healer);
        };
    };
}

/// Exports a type that implements [`Plugin`] and [`Detector`] (the `detector-plugin` world).
#[macro_export]
macro_rules! export_detector {
    ($t:ty) => {
        $crate::__export_detector_role!($t);
    };
}

/// Exports a type that implements [`Plugin`] and [`Healer`] (the `healer-plugin` world).
#[macro_export]
macro_rules! export_healer {
    ($t:ty) => {
        $crate::__export_healer_role!($t);
    };
}

/// Exports a type that implements [`Plugin`], [`Detector`] and [`Healer`] (the
/// `full-plugin` world).
#[macro_export]
macro_rules! export_plugin {
    ($t:ty) => {
        $crate::__export_detector_role!($t);
        $crate::__export_healer_role!($t);
    };
}
