//! `sdx`: the sdx-portal server and admin command.
use clap::{Parser, Subcommand};
use sdx_portal::{Portal, PortalBuilder, demo, model::Actor};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sdx", version, about = "Secure document exchange portal")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the portal. With --demo, create (or reuse) a demo portal first.
    Serve {
        /// Create or reuse the demo portal in the data dir (default ./sdx-demo).
        #[arg(long)]
        demo: bool,
        /// Data directory.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Check the audit trail's hash chain; exits non-zero if it is broken.
    AuditVerify {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Serve { demo, data } => {
            let dir = match (data, demo) {
                (Some(d), _) => d,
                (None, true) => PathBuf::from("sdx-demo"),
                (None, false) => {
                    return Err(
                        "give --data DIR (or --demo for a demo portal in ./sdx-demo)".into(),
                    );
                }
            };
            let portal = PortalBuilder::new(&dir)
                .open()
                .await
                .map_err(|e| e.to_string())?;
            if demo {
                let d = demo::provision(&portal).await.map_err(|e| e.to_string())?;
                print_demo(&portal, &dir, &d).await?;
            }
            eprintln!(
                "\nThe WebDAV and SFTP front ends are not part of this build yet; nothing is listening."
            );
            Ok(())
        }
        Cmd::AuditVerify { data } => {
            let portal = PortalBuilder::new(&data)
                .open()
                .await
                .map_err(|e| e.to_string())?;
            let r = portal
                .audit_verify(&Actor::system())
                .await
                .map_err(|e| e.to_string())?;
            match r.problem {
                None => {
                    println!("audit trail intact: {} entries", r.entries);
                    Ok(())
                }
                Some(p) => Err(format!(
                    "audit trail broken after {} good entries: {p}",
                    r.entries
                )),
            }
        }
    }
}

async fn print_demo(portal: &Portal, dir: &std::path::Path, _d: &demo::Demo) -> Result<(), String> {
    println!("Demo portal in {}", dir.display());
    println!(
        "  staff login:  {} / {}",
        demo::DEMO_STAFF_EMAIL,
        demo::DEMO_PASSWORD
    );
    println!(
        "  client login: {} / {}",
        demo::DEMO_CLIENT_EMAIL,
        demo::DEMO_PASSWORD
    );
    let who = portal
        .authenticate_password(demo::DEMO_CLIENT_EMAIL, demo::DEMO_PASSWORD)
        .await
        .map_err(|e| e.to_string())?;
    let tree = portal.tree(Actor::api(who));
    println!("What the client sees:");
    for m in tree.list("/").await.map_err(|e| e.to_string())? {
        println!("  /{}", m.name);
        for f in tree
            .list(&format!("/{}", m.name))
            .await
            .map_err(|e| e.to_string())?
        {
            println!("    /{}/{}  [{}]", m.name, f.name, f.perms);
            for s in tree
                .list(&format!("/{}/{}", m.name, f.name))
                .await
                .map_err(|e| e.to_string())?
            {
                println!("      /{}/{}/{}  [{}]", m.name, f.name, s.name, s.perms);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sdx: can't start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdx: {e}");
            ExitCode::FAILURE
        }
    }
}
