//! nixtest: tests NixOS installations in pristine VMs and heals them while they run.
//!
//! The pipeline, one module per stage: the stream of an install becomes events
//! (`nixtest_events`), detector [`plugin`]s turn events into [`findings`], healer plugins turn
//! findings into [`actions`] using the guest's [`facts`].

pub mod actions;
pub mod builtin;
pub mod config_copy;
pub mod dashboard;
pub mod deadlines;
pub mod display;
pub mod facts;
pub mod fallback;
pub mod fault;
pub mod findings;
pub mod guest;
pub mod healing;
pub mod history;
pub mod installer;
pub mod kernel_console;
pub mod monitor;
pub mod orchestrator;
pub mod partition;
pub mod paths;
pub mod plugin;
pub mod plugins;
pub mod probe;
pub mod profile;
pub mod registry;
pub mod replay;
pub mod report;
pub mod run_event;
pub mod run_files;
pub mod session;
pub mod settings;
pub mod signatures;
pub mod ssh;
pub mod stream;
pub mod term;
pub mod verify;
pub mod vm;
pub mod watch;
pub mod workers;
