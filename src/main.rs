//! `portico`: parse the command line and run it.

fn main() -> std::process::ExitCode {
    portico::cli::main()
}
