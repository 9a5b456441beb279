//! The `shipit` binary: parse, set up logging, run, map the outcome to an exit code.

fn main() -> std::process::ExitCode {
    shipit::main()
}
