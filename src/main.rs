use clap::Parser;

use daytona_mcp::cli::{Cli, run};

fn main() {
    // A persistent sandbox's agent: before any runtime or thread exists, since it forks.
    if let Some(code) = daytona_mcp::drivers::local::agent::run_if_requested() {
        std::process::exit(code);
    }
    actix_web::rt::System::new().block_on(async {
        let cli = Cli::parse();
        if let Err(e) = run(cli).await {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    })
}
