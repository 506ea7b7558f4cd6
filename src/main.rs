//! The `flywheel` binary: see [`flywheel::cli`].

fn main() -> std::process::ExitCode {
    flywheel::cli::main()
}
