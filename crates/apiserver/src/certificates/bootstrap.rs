//! Bootstrap tokens as kube-apiserver's `--enable-bootstrap-token-auth` reads them
//! (a bearer token `ID.SECRET` checked against the Secret
//! `kube-system/bootstrap-token-ID`), and the server's own join token, made on
//! first start, kept at `DATA_DIR/token` and backed by such a Secret without expiry.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_join::{secret, BootstrapToken, JoinToken, TokenSecret};
use serde_json::{json, Value};

use crate::api::Api;
use crate::error::Error;
use crate::request::User;
use crate::status::ApiError;

/// The user of a bearer token shaped as a bootstrap token: None when it has another
/// shape; a 401 when no Secret backs it, or the Secret refuses it.
pub async fn authenticate(api: &Arc<Api>, bearer: &str) -> Option<Result<User, ApiError>> {
    let token = BootstrapToken::parse(bearer)?;
    Some(match token_secret(api, &token.id).await {
        Ok(ts) => match ts.authenticate(&token.secret, jiff::Timestamp::now()) {
            Ok(groups) => Ok(User::new(&secret::user_name(&token.id), "", groups)),
            Err(e) => {
                tracing::info!(token = %token.id, "refused bootstrap token: {e}");
                Err(ApiError::unauthorized())
            }
        },
        Err(why) => {
            tracing::info!(token = %token.id, "refused bootstrap token: {why}");
            Err(ApiError::unauthorized())
        }
    })
}

/// The bootstrap token Secret of `id`, decoded.
async fn token_secret(api: &Arc<Api>, id: &str) -> Result<TokenSecret, String> {
    let secrets = crate::resources::find("", "v1", "secrets").expect("served");
    let name = secret::secret_name(id);
    let (o, _) = crate::objects::read(api, secrets, Some(secret::NAMESPACE), &name)
        .await
        .map_err(|_| format!("no Secret {}/{name}", secret::NAMESPACE))?;
    if o.get("type").and_then(Value::as_str) != Some(secret::SECRET_TYPE) {
        return Err(format!(
            "Secret {name} is not of type {}",
            secret::SECRET_TYPE
        ));
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(format!("Secret {name} is being deleted"));
    }
    let data = decode_data(&o);
    TokenSecret::from_data(&name, &data).map_err(|e| e.to_string())
}

/// A Secret's data, base64-decoded (entries that do not decode are left out).
fn decode_data(o: &Value) -> BTreeMap<String, String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    o.get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let bytes = b64.decode(v.as_str()?).ok()?;
            Some((k.clone(), String::from_utf8(bytes).ok()?))
        })
        .collect()
}

/// The Secret object for a bootstrap token.
pub fn secret_object(ts: &TokenSecret) -> Value {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: serde_json::Map<String, Value> = ts
        .to_data()
        .into_iter()
        .map(|(k, v)| (k, json!(b64.encode(v))))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret::secret_name(&ts.token.id), "namespace": secret::NAMESPACE},
        "type": secret::SECRET_TYPE,
        "data": data,
    })
}

/// The file the server keeps its join token in, under its data directory.
pub fn token_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("token")
}

/// The server's join token: read from `DATA_DIR/token`, or made there on first start.
/// Its CA hash is always the current CA's (a token file from another CA is
/// rewritten with the same credentials).
pub fn ensure_join_token(data_dir: &Path, ca_pem: &str) -> Result<JoinToken, Error> {
    let path = token_path(data_dir);
    let hash = berth_join::ca_hash(ca_pem.as_bytes());
    let token = match std::fs::read_to_string(&path) {
        Ok(text) => {
            text.parse::<JoinToken>()
                .map_err(|e| Error::Setup(format!("{}: {e}", path.display())))?
                .token
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            BootstrapToken::generate().map_err(|e| Error::Setup(e.to_string()))?
        }
        Err(e) => return Err(Error::Setup(format!("reading {}: {e}", path.display()))),
    };
    let join = JoinToken {
        ca_hash: hash,
        token,
    };
    let text = format!("{join}\n");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        berth_hostdirs::write_private(&path, text.as_bytes())
            .map_err(|e| Error::Setup(format!("writing {}: {e}", path.display())))?;
    }
    Ok(join)
}

/// The Secret backing the server's join token, written when missing: the server's
/// token never expires (as k3s's server token), and is revoked by deleting its
/// Secret and `DATA_DIR/token` before a restart.
pub async fn install_join_token(api: &Arc<Api>, join: &JoinToken) -> Result<(), ApiError> {
    let ts = TokenSecret {
        token: join.token.clone(),
        expiration: None,
        usages: vec![
            secret::USAGE_AUTHENTICATION.into(),
            secret::USAGE_SIGNING.into(),
        ],
        // Also the servers' token: another server may join with it.
        extra_groups: vec![secret::SERVERS_GROUP.into()],
        description: "The server's join token (berth server, DATA_DIR/token).".into(),
    };
    // Its namespace first: this runs before the server's other bootstrapping.
    let namespaces = crate::resources::find("", "v1", "namespaces").expect("served");
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": secret::NAMESPACE}});
    crate::objects::create_internal(api, namespaces, None, ns).await?;
    let secrets = crate::resources::find("", "v1", "secrets").expect("served");
    let want = secret_object(&ts);
    crate::objects::create_internal(api, secrets, Some(secret::NAMESPACE), want.clone()).await?;
    // One from an earlier version, or edited: put the server's token back as it is.
    let name = secret::secret_name(&ts.token.id);
    let (cur, rev) = crate::objects::read(api, secrets, Some(secret::NAMESPACE), &name).await?;
    if cur.get("data") != want.get("data") {
        let mut new = cur.clone();
        new["data"] = want["data"].clone();
        crate::objects::replace_internal(
            api,
            secrets,
            Some(secret::NAMESPACE),
            &name,
            (&cur, rev),
            new,
            None,
        )
        .await?;
    }
    Ok(())
}
