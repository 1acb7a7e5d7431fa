//! `berth pull`, `push`, `login`, `logout`: the registry client from the command line.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use berth_image::oci::Platform;
use berth_image::progress::Progress;
use berth_image::registry::{auth, Client, Credentials, RegistryOptions};
use berth_image::Reference;

use crate::Ctx;

/// Connection flags shared by the registry commands (podman's names).
#[derive(Args, Clone)]
pub struct ConnArgs {
    /// Verify TLS certificates (false also allows plain HTTP).
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// Directory of CA certificates (`*.crt`) for this registry.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Credentials file (default ~/.config/berth/auth.json).
    #[arg(long)]
    authfile: Option<PathBuf>,
    /// Credentials for this command: USER:PASSWORD.
    #[arg(long)]
    creds: Option<String>,
}

impl Default for ConnArgs {
    /// What a command without connection flags uses: TLS verified (plain HTTP only
    /// for loopback registries), the default credentials file.
    fn default() -> Self {
        ConnArgs {
            tls_verify: true,
            cert_dir: None,
            authfile: None,
            creds: None,
        }
    }
}

impl ConnArgs {
    fn options(&self) -> anyhow::Result<RegistryOptions> {
        let mut o = RegistryOptions {
            tls_verify: self.tls_verify,
            ..Default::default()
        };
        if let Some(d) = &self.cert_dir {
            o.extra_ca_dirs.push(d.clone());
        }
        if let Some(a) = &self.authfile {
            o.auth_file = a.clone();
        }
        if let Some(c) = &self.creds {
            let (u, p) = c
                .split_once(':')
                .context("--creds: expected USER:PASSWORD")?;
            o.credentials = Some(Credentials {
                username: u.into(),
                password: p.into(),
            });
        }
        Ok(o)
    }
}

/// Arguments of `pull`.
#[derive(Args)]
pub struct PullArgs {
    /// Platform to pull from a multi-platform image (os/arch[/variant]).
    #[arg(long)]
    platform: Option<String>,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
    /// Only download and verify; layers are unpacked when a container first needs them.
    #[arg(long)]
    no_unpack: bool,
    #[command(flatten)]
    conn: ConnArgs,
    /// Image reference: [registry/]name[:tag][@digest].
    image: String,
}

/// Arguments of `push`.
#[derive(Args)]
pub struct PushArgs {
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
    /// Platform to push when only some of an index's images are stored.
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
    /// Stored image.
    image: String,
    /// Destination reference (default: the image's own name).
    destination: Option<String>,
}

/// Arguments of `login`.
#[derive(Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    conn: ConnArgs,
    /// Registry host[:port].
    registry: String,
}

/// Arguments of `logout`.
#[derive(Args)]
pub struct LogoutArgs {
    /// Credentials file.
    #[arg(long)]
    authfile: Option<PathBuf>,
    /// Registry host[:port].
    registry: String,
}

/// `berth pull`.
pub async fn pull(ctx: &Ctx, a: PullArgs) -> anyhow::Result<()> {
    let r: Reference = a.image.parse()?;
    let platform = match &a.platform {
        Some(p) => p.parse()?,
        None => Platform::host(),
    };
    let store = ctx.store()?;
    let client = Client::new(a.conn.options()?);
    let progress = Progress::new(a.quiet);
    if !a.quiet {
        progress.line(&format!("Trying to pull {r}..."));
    }
    let pulled = client
        .pull(&store, &r, &platform, &progress, !a.no_unpack)
        .await?;
    if !a.quiet {
        println!("Digest: {}", pulled.digest);
        if pulled.downloaded {
            println!("Status: Downloaded newer image for {r}");
        } else {
            println!("Status: Image is up to date for {r}");
        }
    }
    println!("{}", pulled.id);
    Ok(())
}

/// When `run` and `create` pull their image (docker's --pull).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// When it is not in the store.
    Missing,
    /// Every time (a newer image under the same name replaces the stored one).
    Always,
    /// Never: an image not in the store is an error.
    Never,
}

/// Pulls `image` for `run` or `create` as `policy` says, with docker's messages and
/// the progress on stderr (stdout is the container's).
pub async fn ensure_image(
    ctx: &Ctx,
    image: &str,
    policy: PullPolicy,
    quiet: bool,
) -> anyhow::Result<()> {
    let store = ctx.store()?;
    // As the engine finds it (an image pulled for another platform included).
    let stored = store.resolve_stored(image).is_ok();
    match (policy, stored) {
        (PullPolicy::Never, false) => bail!(
            "image {image:?} is not in the store and --pull=never forbids pulling it (pull, load or import it first)"
        ),
        (PullPolicy::Never, true) | (PullPolicy::Missing, true) => return Ok(()),
        (PullPolicy::Missing, false) | (PullPolicy::Always, _) => {}
    }
    // An image ID or digest prefix names nothing a registry has.
    let r: Reference = image.parse().with_context(|| {
        format!("image {image:?}: not in the store, and not a reference to pull")
    })?;
    if !stored && !quiet {
        eprintln!("Unable to find image '{r}' locally");
    }
    let client = Client::new(ConnArgs::default().options()?);
    let progress = Progress::new(quiet);
    let pulled = client
        .pull(&store, &r, &Platform::host(), &progress, true)
        .await
        .with_context(|| format!("pull {r}"))?;
    if !quiet {
        eprintln!("Digest: {}", pulled.digest);
        if pulled.downloaded {
            eprintln!("Status: Downloaded newer image for {r}");
        } else {
            eprintln!("Status: Image is up to date for {r}");
        }
    }
    Ok(())
}

/// `berth push`.
pub async fn push(ctx: &Ctx, a: PushArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let dest: Reference = a.destination.as_deref().unwrap_or(&a.image).parse()?;
    if dest.registry == "docker.io" && a.destination.is_none() && !a.image.starts_with("docker.io/")
    {
        bail!(
            "push {:?}: name a registry, e.g. `berth push {} localhost:5000/{}`",
            a.image,
            a.image,
            dest.familiar_name()
        );
    }
    let platform = match &a.platform {
        Some(p) => p.parse()?,
        None => Platform::host(),
    };
    let client = Client::new(a.conn.options()?);
    let progress = Progress::new(a.quiet);
    let (digest, size) = client
        .push(&store, &a.image, &dest, &platform, &progress)
        .await?;
    if !a.quiet {
        println!("{}: digest: {digest} size: {size}", dest.manifest_ref());
    }
    Ok(())
}

/// `berth login`.
pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    let username = match &a.username {
        Some(u) => u.clone(),
        None => bail!("login: give -u USER (and --password-stdin or -p PASSWORD)"),
    };
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = &a.password {
        p.clone()
    } else if std::io::stdin().is_terminal() {
        bail!("login: give the password with --password-stdin (or -p)");
    } else {
        bail!("login: give --password-stdin or -p PASSWORD");
    };
    if password.is_empty() {
        bail!("login: the password is empty");
    }
    let creds = Credentials { username, password };
    let registry = registry_host(&a.registry);
    let mut opts = a.conn.options()?;
    opts.credentials = Some(creds.clone());
    let client = Client::new(opts.clone());
    client.login(&registry).await?;
    auth::store(&opts.auth_file, &registry, &creds)?;
    println!("Login Succeeded!");
    Ok(())
}

/// `berth logout`.
pub fn logout(a: LogoutArgs) -> anyhow::Result<()> {
    let file = a.authfile.unwrap_or_else(auth::default_auth_file);
    let registry = registry_host(&a.registry);
    if auth::remove(&file, &registry)? {
        println!("Removed login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}

/// `https://host:port/` (as docker accepts) → `host:port`.
fn registry_host(r: &str) -> String {
    let r = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
        .unwrap_or(r);
    let host = r.split('/').next().unwrap_or(r);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}
