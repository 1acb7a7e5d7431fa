//! `berth server --server URL --token TOKEN`: another server joining a cluster whose
//! state is in etcd. As an agent does, it checks the first server's CA against the
//! token's hash; then, with the servers' own token (DATA_DIR/token, whose bootstrap
//! user is in the servers' group — tokens made with `berth token create` join
//! agents only), it fetches the cluster CA and ServiceAccount key, so both servers
//! sign and verify the same certificates and tokens. Everything else is in etcd.

use std::path::Path;

use anyhow::Context;
use berth_join::JoinToken;

/// Prepares `data_dir` to serve the cluster of the server at `url`.
pub async fn join(
    url: &str,
    token: &JoinToken,
    data_dir: &Path,
    on_etcd: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        on_etcd,
        "joining another server needs the cluster's shared datastore: give --datastore-endpoint (etcd) here and on the first server; a server on SQLite serves alone"
    );
    // Joined before (a restart): the keys are here, and the other server may be the
    // one that is down.
    let pki = berth_apiserver::pki::pki_dir(data_dir);
    let have = std::fs::read(pki.join(berth_apiserver::pki::CA_CERT)).ok();
    if have.is_some_and(|ca| berth_join::ca_hash(&ca) == token.ca_hash) {
        tracing::info!("this server has joined the cluster before; its keys are in place");
        return Ok(());
    }
    let ca = berth_agent::credentials::join::fetch_ca(url, &token.ca_hash).await?;
    let client = berth_agent::credentials::client::with_token(url, &ca, &token.token.to_string())?;
    let req = http::Request::get(berth_join::SERVER_BOOTSTRAP_PATH)
        .body(Vec::new())
        .context("a request")?;
    let text = client.request_text(req).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 401 => anyhow::anyhow!(
            "the server refused the token (401 Unauthorized): it is wrong, has expired or was deleted"
        ),
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "the token may join agents but not servers: give the first server's own token (its DATA_DIR/token)"
        ),
        kube::Error::Api(s) => anyhow::anyhow!("the server at {url} refused: {}", s.message),
        e => anyhow::Error::new(e).context(format!("asking {url} for the cluster's keys")),
    })?;
    let b: berth_join::ServerBootstrap =
        serde_json::from_str(&text).context("the server's answer is not a server bootstrap")?;
    anyhow::ensure!(
        berth_join::ca_hash(b.ca_cert.as_bytes()) == token.ca_hash,
        "the server handed over a CA other than the one the token names"
    );
    berth_apiserver::pki::Pki::install_joined(&pki, &b)?;
    let token_file = berth_apiserver::certificates::bootstrap::token_path(data_dir);
    berth_hostdirs::write_private(&token_file, format!("{token}\n").as_bytes())
        .with_context(|| format!("writing {}", token_file.display()))?;
    tracing::info!(
        server = url,
        "joined the cluster's servers: CA and ServiceAccount key installed"
    );
    Ok(())
}
