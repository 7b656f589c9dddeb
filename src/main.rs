//! The `logfence` binary: parse flags, dispatch, map errors to exit codes.

use std::io;
use std::process::ExitCode;

use clap::Parser;
use logfence::cli::{Cli, Command};
use logfence::{check, consume, dlq, faults, pipeline::Pipeline, sandbox};

fn main() -> ExitCode {
    logfence::alloc::cap_libc_arenas();
    faults::setup();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Check(args) => {
            // stderr is not held locked: the progress line of an audit draws on it from its own thread.
            let status = check::run(&args, &mut io::stdout().lock(), &mut io::stderr());
            ExitCode::from(status as u8)
        }
        Command::Consume(args) => ExitCode::from(consume::run(&args)),
        Command::Dlq(command) => ExitCode::from(dlq::run(&command)),
        Command::SandboxWorker(args) => {
            let pipeline = match Pipeline::new(args.limits.limits(), &args.line.line_format) {
                // Each record measured on its own, whatever the worker rendered before it.
                Ok(p) => p.with_isolation(true),
                Err(e) => {
                    eprintln!("logfence sandbox worker: --line-format: {e}");
                    return ExitCode::from(64);
                }
            };
            match sandbox::serve(&pipeline, io::stdin().lock(), io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("logfence sandbox worker: {e}");
                    ExitCode::from(70)
                }
            }
        }
    }
}
