//! The `fusec` command (see [`fusec::cli`]).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(fusec::cli::main(std::env::args_os().collect()))
}
