//! The `nixtest` command line: parses flags, wires the library's parts together, and maps
//! every failure to a clear message and the exit codes of the design (0 passed, 1 a test
//! failed, 2 bad usage or configuration, 3 infrastructure).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
