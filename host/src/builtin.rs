//! The built-in plugins, compiled to WebAssembly by the build script and carried in the binary.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Name of the plugin crate and its component bytes.
pub fn all() -> &'static [(&'static str, &'static [u8])] {
    BUILTIN_PLUGINS
}
