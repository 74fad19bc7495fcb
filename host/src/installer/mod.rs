//! Real installers (shared/DESIGN.md, "Real installers"): the user's installer ISO as the
//! VM's source, the way in through its serial console, and the user's flake as what is
//! installed. docs/real-nixos.md lists the NixOS facts this relies on and where each comes
//! from in nixpkgs.

pub mod bootcfg;
pub mod console;
pub mod flake;
pub mod iso;
pub mod standin;

pub use flake::{FlakeError, FlakeRef};
pub use iso::{IsoError, PreparedIso};
