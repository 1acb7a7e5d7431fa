//! Bootstrap tokens as kube-apiserver's `--enable-bootstrap-token-auth` reads them
//! (a bearer token `ID.SECRET` checked against the Secret
//! `kube-system/bootstrap-token-ID`), and the server's two join tokens, made on
//! first start and backed by such Secrets without expiry, as k3s keeps them: the
//! agents' (`DATA_DIR/agent-token`), which joins nodes only, and the servers'
//! (`DATA_DIR/token`), which may also fetch the cluster's keys to join another
//! server — so a node's token can never make a server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_join::secret::JoinRole;
use berth_join::{secret, BootstrapToken, JoinToken, TokenSecret};
use serde_json::{json, Value};

use crate::api::Api;
use crate::error::Error;
use crate::request::User;
use crate::status::ApiError;

/// The user of a bearer token shaped as a bootstrap token: None when it has another
/// shape or no Secret backs it (a static token may look the same); a 401 when its
/// Secret refuses it. Read from the watch cache, as kube's authenticator reads its
/// informer: a request costs no store read.
pub fn authenticate(api: &Arc<Api>, bearer: &str) -> Option<Result<User, ApiError>> {
    let token = BootstrapToken::parse(bearer)?;
    Some(match token_secret(api, &token.id)? {
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

/// The bootstrap token Secret of `id`, decoded; None when there is none.
fn token_secret(api: &Arc<Api>, id: &str) -> Option<Result<TokenSecret, String>> {
    let secrets = crate::resources::find("", "v1", "secrets").expect("served");
    let name = secret::secret_name(id);
    let o = api.hub.get(&secrets.key(Some(secret::NAMESPACE), &name))?;
    Some(decode_secret(&name, &o))
}

fn decode_secret(name: &str, o: &Value) -> Result<TokenSecret, String> {
    if o.get("type").and_then(Value::as_str) != Some(secret::SECRET_TYPE) {
        return Err(format!(
            "Secret {name} is not of type {}",
            secret::SECRET_TYPE
        ));
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(format!("Secret {name} is being deleted"));
    }
    let data = decode_data(o);
    TokenSecret::from_data(name, &data).map_err(|e| e.to_string())
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

/// The file of the servers' join token (it joins servers and agents).
pub fn token_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("token")
}

/// The file of the agents' join token (it joins agents only).
pub fn agent_token_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("agent-token")
}

/// A join token kept at `path`, or made there on first start. Its CA hash is always
/// the current CA's (a token file from another CA is rewritten with the same
/// credentials).
pub fn ensure_join_token(path: &Path, ca_pem: &str) -> Result<JoinToken, Error> {
    let path = path.to_path_buf();
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

/// Settles one of the server's join tokens with the cluster's record of them
/// ([`secret::JOIN_TOKENS_RECORD`]) at every start, and returns the token that joins
/// as `role` — None when it was revoked:
///
/// - none recorded (a new cluster, or one from before the record): the token of this
///   server's file (`path`) is installed and recorded;
/// - this file's token recorded: its Secret is put back as it should be, unless it is
///   gone: then it was revoked (`berth token delete`) and stays so;
/// - another recorded (`berth token rotate` made it, or this server's file predates
///   it): that token is adopted and this server's file rewritten with it.
pub async fn settle_join_token(
    api: &Arc<Api>,
    path: &Path,
    file: &JoinToken,
    role: JoinRole,
) -> Result<Option<JoinToken>, ApiError> {
    // The namespace first: this runs before the server's other bootstrapping.
    let namespaces = crate::resources::find("", "v1", "namespaces").expect("served");
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": secret::NAMESPACE}});
    crate::objects::create_internal(api, namespaces, None, ns).await?;
    // The Secret before the record names it, so a recorded token without its Secret
    // was revoked, never half-made; servers starting together race on the record
    // (compare and swap), and the losers take the winner's.
    let mut recorded = None;
    for _ in 0..RECORD_ATTEMPTS {
        match record(api, role).await? {
            (Some(id), _) => {
                recorded = Some(id);
                break;
            }
            (None, current) => {
                install(api, role, &file.token).await?;
                if claim(api, role, &file.token.id, current).await? {
                    return Ok(Some(file.clone()));
                }
            }
        }
    }
    let Some(recorded) = recorded else {
        return Err(ApiError::internal(format!(
            "kube-system/{} kept changing while this server recorded its {} join token",
            secret::JOIN_TOKENS_RECORD,
            role.key()
        )));
    };
    let secrets = crate::resources::find("", "v1", "secrets").expect("served");
    let name = secret::secret_name(&recorded);
    let cur = match crate::objects::read(api, secrets, Some(secret::NAMESPACE), &name).await {
        Ok(found) => Some(found),
        Err(e) if e.code == 404 => None,
        Err(e) => return Err(e),
    };
    let rotate_hint = if role == JoinRole::Agents {
        "berth token rotate --agents"
    } else {
        "berth token rotate"
    };
    if recorded == file.token.id {
        if cur.is_none() {
            tracing::warn!(
                "the {} join token in {} was revoked (its Secret kube-system/{name} is gone) and stays so: make a new one with `{rotate_hint}`",
                role.key(),
                path.display(),
            );
            return Ok(None);
        }
        install(api, role, &file.token).await?;
        return Ok(Some(file.clone()));
    }
    let Some((obj, _)) = cur else {
        tracing::warn!(
            "the {} join token recorded in kube-system/{} ({recorded}) was revoked, and {} holds an older one: make a new one with `{rotate_hint}`",
            role.key(),
            secret::JOIN_TOKENS_RECORD,
            path.display(),
        );
        return Ok(None);
    };
    // Only a token made as this join token is adopted: the record alone must not
    // turn some other bootstrap token into one that never expires (or joins servers).
    let adopted = match decode_secret(&name, &obj) {
        Ok(a) if a == role.secret(&a.token) => a,
        Ok(_) => {
            tracing::warn!(
                "kube-system/{} names {recorded} as the {} join token, but its Secret is not one (expiry, usages or groups differ): not adopted; make a new one with `{rotate_hint}`",
                secret::JOIN_TOKENS_RECORD,
                role.key(),
            );
            return Ok(None);
        }
        Err(why) => {
            tracing::warn!("the {} join token is unusable: {why}", role.key());
            return Ok(None);
        }
    };
    let join = JoinToken {
        ca_hash: file.ca_hash.clone(),
        token: adopted.token,
    };
    berth_hostdirs::write_private(path, format!("{join}\n").as_bytes())
        .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
    tracing::info!(
        "the {} join token was rotated: {} now holds {}",
        role.key(),
        path.display(),
        join.token.id
    );
    revoke_superseded(api, role, &file.token).await?;
    Ok(Some(join))
}

/// How many times a server tries to record its join token while others change the
/// record.
const RECORD_ATTEMPTS: usize = 5;

/// The id [`secret::JOIN_TOKENS_RECORD`] names for `role` (None: none yet), and the
/// record as read, for [`claim`].
async fn record(
    api: &Arc<Api>,
    role: JoinRole,
) -> Result<(Option<String>, (Value, i64)), ApiError> {
    let configmaps = crate::resources::find("", "v1", "configmaps").expect("served");
    let name = secret::JOIN_TOKENS_RECORD;
    let fresh = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": secret::NAMESPACE},
        "data": {},
    });
    crate::objects::create_internal(api, configmaps, Some(secret::NAMESPACE), fresh).await?;
    let (cur, rev) = crate::objects::read(api, configmaps, Some(secret::NAMESPACE), name).await?;
    let id = cur
        .pointer(&format!("/data/{}", role.key()))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((id, (cur, rev)))
}

/// Records `mine` as `role`'s join token if the record is still as read; false when
/// another writer changed it first.
async fn claim(
    api: &Arc<Api>,
    role: JoinRole,
    mine: &str,
    (cur, rev): (Value, i64),
) -> Result<bool, ApiError> {
    let configmaps = crate::resources::find("", "v1", "configmaps").expect("served");
    let mut new = cur.clone();
    new["data"][role.key()] = json!(mine);
    match crate::objects::replace_internal(
        api,
        configmaps,
        Some(secret::NAMESPACE),
        secret::JOIN_TOKENS_RECORD,
        (&cur, rev),
        new,
        None,
    )
    .await
    {
        Ok(()) => Ok(true),
        Err(e) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the Secret of this server's own former join token once another is
/// adopted (a cluster from before the record had one per server), if it is one:
/// a join token that joined nodes here must not outlive a rotation elsewhere.
async fn revoke_superseded(
    api: &Arc<Api>,
    role: JoinRole,
    old: &BootstrapToken,
) -> Result<(), ApiError> {
    let secrets = crate::resources::find("", "v1", "secrets").expect("served");
    let name = secret::secret_name(&old.id);
    let obj = match crate::objects::read(api, secrets, Some(secret::NAMESPACE), &name).await {
        Ok((o, _)) => o,
        Err(e) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    };
    if decode_secret(&name, &obj).is_ok_and(|ts| ts == role.secret(old)) {
        let opts = crate::objects::DeleteOpts {
            grace: None,
            propagation: "Background".into(),
            uid: None,
            rv: None,
            dry_run: false,
        };
        match crate::objects::delete(api, secrets, Some(secret::NAMESPACE), &name, &opts).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
        tracing::info!(
            "revoked this server's former {} join token {} (kube-system/{name})",
            role.key(),
            old.id
        );
    }
    Ok(())
}

/// Writes the Secret of `token` as `role`'s join token, or puts it back as it should
/// be (one from an earlier version, or edited).
async fn install(api: &Arc<Api>, role: JoinRole, token: &BootstrapToken) -> Result<(), ApiError> {
    let secrets = crate::resources::find("", "v1", "secrets").expect("served");
    let want = secret_object(&role.secret(token));
    crate::objects::create_internal(api, secrets, Some(secret::NAMESPACE), want.clone()).await?;
    let name = secret::secret_name(&token.id);
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
