//! The `botfleet` executable: parses the command line, runs one command, and
//! turns its outcome into the exit code DESIGN.md fixes. Everything else lives
//! in the library so the integration tests and the worker share it.

fn main() {
    std::process::exit(botfleet::cli::main());
}
