use clap::Parser;

use daytona_mcp::cli::{Cli, run};

#[actix_web::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
