//! The `synckit` command: [`synckit_cli::run`] with no event types.

fn main() -> std::process::ExitCode {
    synckit_cli::run(synckit::evolution::EventTypes::new())
}
