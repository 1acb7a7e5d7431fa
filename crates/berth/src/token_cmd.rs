//! `berth token create|list|delete|rotate`: bootstrap tokens, as `kubeadm token` and
//! `k3s token` manage them — Secrets in kube-system that agents join with. A new
//! token is printed whole, with the cluster CA's hash, so it verifies the server.
//! `rotate` replaces one of the servers' own join tokens, as `k3s token rotate`.

use std::path::PathBuf;

use anyhow::Context;
use berth_join::secret::JoinRole;
use berth_join::{secret, BootstrapToken, JoinToken, TokenSecret};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};

use crate::Ctx;

/// `berth token` subcommands.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a bootstrap token and print the join token for it.
    Create(CreateArgs),
    /// List the bootstrap tokens.
    #[command(alias = "ls")]
    List(Common),
    /// Delete bootstrap tokens (by id, ID.SECRET, or the whole join token).
    #[command(alias = "rm")]
    Delete(DeleteArgs),
    /// Replace the servers' join token (DATA_DIR/token) with a new one, or with
    /// --agents the agents' (DATA_DIR/agent-token): the old one stops working at
    /// once, and every server takes the new one at its next start.
    Rotate(RotateArgs),
}

/// How to reach the server.
#[derive(Args)]
pub struct Common {
    /// The admin kubeconfig [default: the local server's, ROOT/server/pki/admin.kubeconfig].
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

/// `berth token create` options.
#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    common: Common,
    /// How long the token works (0: forever).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// What the token is for.
    #[arg(long, default_value = "")]
    description: String,
    /// Extra groups its user is in (each system:bootstrappers:...).
    #[arg(long, value_delimiter = ',')]
    groups: Vec<String>,
    /// What the token may be used for, as kubeadm's: authentication (to the API
    /// server, for a node's certificate) and signing (of cluster-info, so a node
    /// given the bare ID.SECRET can trust the server).
    #[arg(long, value_delimiter = ',', default_values_t = [secret::USAGE_SIGNING.to_string(), secret::USAGE_AUTHENTICATION.to_string()], value_parser = usage)]
    usages: Vec<String>,
}

/// A bootstrap token usage berth knows.
fn usage(s: &str) -> Result<String, String> {
    let known = [secret::USAGE_AUTHENTICATION, secret::USAGE_SIGNING];
    if known.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a bootstrap token usage: use {}",
            known.join(" or ")
        ))
    }
}

/// `berth token delete` options.
#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    common: Common,
    /// The tokens.
    #[arg(required = true)]
    tokens: Vec<String>,
}

/// `berth token rotate` options.
#[derive(Args)]
pub struct RotateArgs {
    #[command(flatten)]
    common: Common,
    /// The agents' join token instead of the servers'.
    #[arg(long)]
    agents: bool,
}

async fn client(ctx: &Ctx, c: &Common) -> anyhow::Result<kube::Client> {
    let path = c
        .kubeconfig
        .clone()
        .unwrap_or_else(|| ctx.root.join("server/pki/admin.kubeconfig"));
    if !path.exists() {
        anyhow::bail!(
            "no kubeconfig at {}: run this on a server, or give --kubeconfig of an admin",
            path.display()
        );
    }
    crate::agent_cmd::client(&path, None).await
}

/// Runs a `berth token` command.
pub async fn run(ctx: &Ctx, cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(a) => create(ctx, a).await,
        TokenCommand::List(c) => list(ctx, c).await,
        TokenCommand::Delete(a) => delete(ctx, a).await,
        TokenCommand::Rotate(a) => rotate(ctx, a).await,
    }
}

async fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<()> {
    for g in &a.groups {
        if !g.starts_with("system:bootstrappers:") {
            anyhow::bail!("--groups {g:?}: extra groups must start with system:bootstrappers:");
        }
    }
    let client = client(ctx, &a.common).await?;
    let ca_hash = served_ca_hash(&client).await?;
    let token = BootstrapToken::generate()?;
    let expiration = if a.ttl.is_zero() {
        None
    } else {
        let secs = i64::try_from(a.ttl.as_secs()).context("--ttl is too long")?;
        Some(
            k8s_openapi::jiff::Timestamp::now()
                + k8s_openapi::jiff::SignedDuration::from_secs(secs),
        )
    };
    let ts = TokenSecret {
        token: token.clone(),
        expiration,
        usages: {
            let mut u = a.usages.clone();
            u.sort();
            u.dedup();
            u
        },
        extra_groups: a.groups.clone(),
        description: a.description.clone(),
    };
    write_secret(&client, &ts).await?;
    println!("{}", JoinToken { ca_hash, token });
    Ok(())
}

/// The hash of the cluster CA exactly as the server serves it to joining nodes.
async fn served_ca_hash(client: &kube::Client) -> anyhow::Result<String> {
    let req = http::Request::get("/cacerts")
        .body(Vec::new())
        .context("a request")?;
    let ca = client
        .request_text(req)
        .await
        .context("fetching the cluster CA from the server")?;
    Ok(berth_join::ca_hash(ca.as_bytes()))
}

/// Writes a bootstrap token's Secret.
async fn write_secret(client: &kube::Client, ts: &TokenSecret) -> anyhow::Result<()> {
    let obj = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret::secret_name(&ts.token.id)),
            namespace: Some(secret::NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(secret::SECRET_TYPE.into()),
        string_data: Some(ts.to_data()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), secret::NAMESPACE)
        .create(&PostParams::default(), &obj)
        .await
        .context("writing the bootstrap token's Secret")?;
    Ok(())
}

async fn rotate(ctx: &Ctx, a: RotateArgs) -> anyhow::Result<()> {
    use berth_apiserver::certificates::bootstrap::{agent_token_path, token_path};
    use k8s_openapi::api::core::v1::ConfigMap;
    let role = if a.agents {
        JoinRole::Agents
    } else {
        JoinRole::Servers
    };
    let client = client(ctx, &a.common).await?;
    let ca_hash = served_ca_hash(&client).await?;
    let token = BootstrapToken::generate()?;
    write_secret(&client, &role.secret(&token)).await?;
    // The record names the new token; servers install what it names at start.
    let records = Api::<ConfigMap>::namespaced(client.clone(), secret::NAMESPACE);
    let record = secret::JOIN_TOKENS_RECORD;
    let old = records
        .get_opt(record)
        .await
        .with_context(|| format!("reading kube-system/{record}"))?
        .and_then(|c| c.data?.remove(role.key()));
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": record, "namespace": secret::NAMESPACE},
        "data": {role.key(): token.id},
    });
    records
        .patch(
            record,
            &kube::api::PatchParams::apply("berth-token").force(),
            &kube::api::Patch::Apply(&patch),
        )
        .await
        .with_context(|| format!("recording the new token in kube-system/{record}"))?;
    // The old token is revoked with its Secret.
    if let Some(old) = old.filter(|o| *o != token.id) {
        match Api::<Secret>::namespaced(client, secret::NAMESPACE)
            .delete(&secret::secret_name(&old), &Default::default())
            .await
        {
            Ok(_) => eprintln!("bootstrap token {old:?} revoked"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).context(format!("revoking the old token {old:?}")),
        }
    }
    let join = JoinToken { ca_hash, token };
    // This host's file, when this is the server whose admin kubeconfig was used;
    // other servers rewrite theirs at their next start.
    if a.common.kubeconfig.is_none() {
        let data_dir = ctx.root.join("server");
        let path = match role {
            JoinRole::Servers => token_path(&data_dir),
            JoinRole::Agents => agent_token_path(&data_dir),
        };
        berth_hostdirs::write_private(&path, format!("{join}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{} now holds the new token", path.display());
    }
    println!("{join}");
    Ok(())
}

async fn list(ctx: &Ctx, c: Common) -> anyhow::Result<()> {
    let client = client(ctx, &c).await?;
    let lp = ListParams::default().fields(&format!("type={}", secret::SECRET_TYPE));
    let secrets = Api::<Secret>::namespaced(client, secret::NAMESPACE)
        .list(&lp)
        .await
        .context("listing bootstrap tokens")?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut table = crate::table::Table::new(&[
        "TOKEN",
        "TTL",
        "EXPIRES",
        "USAGES",
        "DESCRIPTION",
        "EXTRA GROUPS",
    ]);
    for s in secrets.items {
        let name = s.metadata.name.clone().unwrap_or_default();
        let data = s.data.iter().flatten();
        let ts =
            match TokenSecret::from_bytes(&name, data.map(|(k, v)| (k.as_str(), v.0.as_slice()))) {
                Ok(ts) => ts,
                Err(e) => {
                    eprintln!("skipping {name}: {e}");
                    continue;
                }
            };
        let (ttl, expires) = match ts.expiration {
            None => ("<forever>".to_string(), "<never>".to_string()),
            Some(e) if e <= now => (
                "<expired>".into(),
                e.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ),
            Some(e) => (
                ttl_text(e.as_second() - now.as_second()),
                e.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ),
        };
        let or_none = |v: String| {
            if v.is_empty() {
                "<none>".to_string()
            } else {
                v
            }
        };
        table.row(vec![
            ts.token.to_string(),
            ttl,
            expires,
            ts.usages.join(","),
            or_none(ts.description),
            or_none(ts.extra_groups.join(",")),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// A time left as kubeadm prints it: 23h, 6d, 59m.
fn ttl_text(secs: i64) -> String {
    match secs {
        s if s >= 2 * 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The token id of `text`: an id, ID.SECRET, or a join token.
fn token_id(text: &str) -> anyhow::Result<String> {
    if BootstrapToken::is_id(text) {
        return Ok(text.into());
    }
    if let Some(t) = BootstrapToken::parse(text) {
        return Ok(t.id);
    }
    match text.parse::<JoinToken>() {
        Ok(j) => Ok(j.token.id),
        Err(_) => anyhow::bail!(
            "{text:?} is not a token id ([a-z0-9]{{6}}), a token (ID.SECRET) or a join token"
        ),
    }
}

async fn delete(ctx: &Ctx, a: DeleteArgs) -> anyhow::Result<()> {
    let client = client(ctx, &a.common).await?;
    let api = Api::<Secret>::namespaced(client, secret::NAMESPACE);
    for t in &a.tokens {
        let id = token_id(t)?;
        match api
            .delete(&secret::secret_name(&id), &Default::default())
            .await
        {
            Ok(_) => println!("bootstrap token {id:?} deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                anyhow::bail!("bootstrap token {id:?} not found")
            }
            Err(e) => return Err(e).context(format!("deleting bootstrap token {id:?}")),
        }
    }
    Ok(())
}
