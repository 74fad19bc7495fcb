//! The built-in plugins, compiled to WebAssembly by the build script and carried in the binary.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Name of the plugin crate, its component bytes and their hex sha256 (taken at build time:
/// see [`crate::plugin::component_sha256`]).
pub fn all() -> &'static [(&'static str, &'static [u8], &'static str)] {
    BUILTIN_PLUGINS
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hashes_taken_at_build_time_are_the_bytes_carried() {
        assert!(!super::all().is_empty());
        for (name, bytes, sha256) in super::all() {
            assert_eq!(crate::plugin::component_sha256(bytes), *sha256, "{name}");
        }
    }
}
