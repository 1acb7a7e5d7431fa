//! The server's certificates, made on first start and kept in the data directory: a
//! cluster CA, the serving certificate (localhost, 127.0.0.1, the host name and any
//! extra names), an admin client certificate (group system:masters) and the admin
//! kubeconfig that embeds them — what k3s writes to /etc/rancher/k3s/k3s.yaml.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::Error;

/// The PEM files of the server's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca_cert: String,
    /// The serving certificate chain (PEM).
    pub serving_cert: String,
    /// The serving key (PEM).
    pub serving_key: String,
    /// The directory the files live in.
    pub dir: PathBuf,
}

/// The PKI directory of a server's data directory.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// The CA certificate's file in the PKI directory.
pub const CA_CERT: &str = "ca.crt";
/// The nodes' serving CA certificate's file.
pub const KUBELET_CA_CERT: &str = "kubelet-ca.crt";
/// The nodes' serving CA key's file.
pub const KUBELET_CA_KEY: &str = "kubelet-ca.key";

/// The ServiceAccount token signing key's file in the PKI directory.
pub const SERVICE_ACCOUNT_KEY: &str = "service-account.key";

fn pki_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Setup(format!("{what}: {e}"))
}

fn write_private(path: &Path, data: &str) -> Result<(), Error> {
    berth_hostdirs::write_private(path, data.as_bytes())
        .map_err(|e| pki_err(&format!("writing {}", path.display()), e))
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| pki_err(&format!("reading {}", path.display()), e))
}

/// How long the CAs a server makes are valid: ten years, as kubeadm's and k3s's.
const CA_VALID_FOR: time::Duration = time::Duration::days(3650);
/// How long the server's own leaf certificates (serving, admin, node) are valid: a
/// year, as kubeadm's and k3s's.
pub const LEAF_VALID_FOR: time::Duration = time::Duration::days(365);
/// A leaf certificate with less than this left is issued again when the server
/// starts (k3s renews its certificates on start 90 days before they expire).
pub const RENEW_BEFORE: time::Duration = time::Duration::days(90);

/// The moment (unix seconds) [`RENEW_BEFORE`] from now: a certificate ending
/// before it is near its end.
fn renewal_horizon() -> i64 {
    (time::OffsetDateTime::now_utc() + RENEW_BEFORE).unix_timestamp()
}

/// Whether the PEM certificate `cert` is unreadable or ends within [`RENEW_BEFORE`]
/// and before its CA `ca_cert` (if it has one) does: one as long as its CA cannot
/// be issued again any longer, and doing so at every start would change nothing.
fn due_for_renewal(cert: &str, ca_cert: Option<&str>) -> bool {
    let Ok((_, not_after)) = berth_join::csr::validity(cert) else {
        return true;
    };
    let ca_end = ca_cert
        .and_then(|ca| berth_join::csr::validity(ca).ok())
        .map_or(i64::MAX, |(_, end)| end);
    not_after < renewal_horizon().min(ca_end)
}

/// The window a new leaf certificate is valid in: from a little back (a clock
/// slightly behind accepts it at once) for `valid_for`, never past the CA's end.
fn leaf_window(
    ca_cert: &str,
    valid_for: time::Duration,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), Error> {
    let (_, ca_end) =
        berth_join::csr::validity(ca_cert).map_err(|e| pki_err("the CA certificate", e))?;
    let ca_end = time::OffsetDateTime::from_unix_timestamp(ca_end)
        .map_err(|e| pki_err("the CA certificate's end", e))?;
    let now = time::OffsetDateTime::now_utc();
    if ca_end <= now {
        return Err(Error::Setup(format!(
            "the cluster CA expired at {ca_end}: it signs nothing more; a new CA (a new cluster) is needed"
        )));
    }
    Ok((
        now - time::Duration::minutes(5),
        (now + valid_for).min(ca_end),
    ))
}

/// A certificate signed by the CA (`ca_cert` is its PEM), valid for `valid_for`:
/// returns (cert PEM, key PEM).
fn issue(
    ca: &Issuer<'_, KeyPair>,
    ca_cert: &str,
    valid_for: time::Duration,
    cn: &str,
    orgs: &[&str],
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(|e| pki_err("generating a key", e))?;
    let mut p = CertificateParams::new(sans).map_err(|e| pki_err("certificate names", e))?;
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![usage];
    (p.not_before, p.not_after) = leaf_window(ca_cert, valid_for)?;
    let cert = p
        .signed_by(&key, ca)
        .map_err(|e| pki_err("signing a certificate", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Makes a self-signed CA at `cert`/`key`, named `name@<unix time>`.
fn make_ca(cert_path: &Path, key_path: &Path, name: &str) -> Result<(), Error> {
    let key = KeyPair::generate().map_err(|e| pki_err("generating a CA key", e))?;
    let mut p =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_err("CA parameters", e))?;
    p.distinguished_name
        .push(DnType::CommonName, format!("{name}@{}", unix_now()));
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + CA_VALID_FOR;
    let cert = p
        .self_signed(&key)
        .map_err(|e| pki_err("self-signing a CA", e))?;
    write_private(key_path, &key.serialize_pem())?;
    write_private(cert_path, &cert.pem())
}

impl Pki {
    /// Loads the PKI under `dir`, making what is missing: the CA once, the serving
    /// certificate whenever `names` asks for a name it lacks, the admin kubeconfig
    /// pointing at `server_url`.
    pub fn ensure(dir: &Path, names: &[String], server_url: &str) -> Result<Pki, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| pki_err(&format!("creating {}", dir.display()), e))?;
        let (ca_crt, ca_key) = (dir.join(CA_CERT), dir.join("ca.key"));
        if !ca_crt.exists() || !ca_key.exists() {
            make_ca(&ca_crt, &ca_key, "berth-ca")?;
            for stale in ["serving.crt", "serving.key", "admin.crt", "admin.key"] {
                let _ = std::fs::remove_file(dir.join(stale));
            }
        }
        // Nodes' serving certificates come from a CA of their own, which no client of
        // the API server trusts: a node's certificate, whatever names it carries,
        // can never pass for the API server.
        let (kca_crt, kca_key) = (dir.join(KUBELET_CA_CERT), dir.join(KUBELET_CA_KEY));
        if !kca_crt.exists() || !kca_key.exists() {
            make_ca(&kca_crt, &kca_key, "berth-kubelet-serving-ca")?;
        }
        let ca_cert = read(&ca_crt)?;
        if due_for_renewal(&ca_cert, None) {
            // As kubeadm: the CA is not renewed on its own (every node trusts it).
            tracing::warn!(
                "the cluster CA ({}) expires within {} days: certificates it signs end with it",
                ca_crt.display(),
                RENEW_BEFORE.whole_days()
            );
        }
        let ca_keypair =
            KeyPair::from_pem(&read(&ca_key)?).map_err(|e| pki_err("the CA key", e))?;
        let ca = Issuer::from_ca_cert_pem(&ca_cert, ca_keypair)
            .map_err(|e| pki_err("the CA certificate", e))?;

        let mut sans: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
        ];
        if let Ok(h) = rustix::system::uname().nodename().to_str() {
            sans.push(h.to_string());
        }
        for n in names {
            if !sans.contains(n) {
                sans.push(n.clone());
            }
        }
        let names_file = dir.join("serving.names");
        let (srv_crt, srv_key) = (dir.join("serving.crt"), dir.join("serving.key"));
        let have = std::fs::read_to_string(&names_file).unwrap_or_default();
        if !srv_key.exists()
            || have != sans.join("\n")
            || due_for_renewal(
                &std::fs::read_to_string(&srv_crt).unwrap_or_default(),
                Some(&ca_cert),
            )
        {
            let (c, k) = issue(
                &ca,
                &ca_cert,
                LEAF_VALID_FOR,
                "berth-apiserver",
                &[],
                sans.clone(),
                ExtendedKeyUsagePurpose::ServerAuth,
            )?;
            write_private(&srv_key, &k)?;
            write_private(&srv_crt, &c)?;
            write_private(&names_file, &sans.join("\n"))?;
        }
        let (adm_crt, adm_key) = (dir.join("admin.crt"), dir.join("admin.key"));
        if !adm_key.exists()
            || due_for_renewal(
                &std::fs::read_to_string(&adm_crt).unwrap_or_default(),
                Some(&ca_cert),
            )
        {
            let (c, k) = issue(
                &ca,
                &ca_cert,
                LEAF_VALID_FOR,
                "system:admin",
                &["system:masters"],
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
            )?;
            write_private(&adm_key, &k)?;
            write_private(&adm_crt, &c)?;
        }
        let pki = Pki {
            ca_cert,
            serving_cert: read(&srv_crt)?,
            serving_key: read(&srv_key)?,
            dir: dir.to_path_buf(),
        };
        pki.write_kubeconfig(&dir.join("admin.kubeconfig"), server_url)?;
        Ok(pki)
    }

    /// Writes a kubeconfig for the admin user at `path`, for the server at `url`.
    pub fn write_kubeconfig(&self, path: &Path, url: &str) -> Result<(), Error> {
        let cert = read(&self.dir.join("admin.crt"))?;
        let key = read(&self.dir.join("admin.key"))?;
        self.write_client_kubeconfig(path, url, "admin", &cert, &key)
    }

    /// Writes a kubeconfig at `path` for the server at `url`, with a client
    /// certificate and key (PEM) embedded under the user name `label`.
    fn write_client_kubeconfig(
        &self,
        path: &Path,
        url: &str,
        label: &str,
        cert: &str,
        key: &str,
    ) -> Result<(), Error> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let doc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: {label}\n    namespace: default\ncurrent-context: berth\nusers:\n- name: {label}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&self.ca_cert),
            b64(cert),
            b64(key),
        );
        write_private(path, &doc)
    }

    /// What another server needs to join: the CA and the ServiceAccount key.
    pub fn server_bootstrap(&self) -> Result<berth_join::ServerBootstrap, Error> {
        let (kubelet_ca_cert, kubelet_ca_key) = self.kubelet_ca()?;
        Ok(berth_join::ServerBootstrap {
            ca_cert: self.ca_cert.clone(),
            ca_key: self.ca_key_pem()?,
            service_account_key: read(&self.dir.join(SERVICE_ACCOUNT_KEY))?,
            kubelet_ca_cert,
            kubelet_ca_key,
        })
    }

    /// The nodes' serving CA: (certificate PEM, key PEM).
    pub fn kubelet_ca(&self) -> Result<(String, String), Error> {
        Ok((
            read(&self.dir.join(KUBELET_CA_CERT))?,
            read(&self.dir.join(KUBELET_CA_KEY))?,
        ))
    }

    /// Installs the CA and ServiceAccount key of the cluster a server joins under
    /// `dir`, before its first start; a `dir` that holds another CA is refused.
    pub fn install_joined(dir: &Path, b: &berth_join::ServerBootstrap) -> Result<(), Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| pki_err(&format!("creating {}", dir.display()), e))?;
        let ca = dir.join(CA_CERT);
        if let Ok(have) = std::fs::read_to_string(&ca) {
            if have != b.ca_cert {
                return Err(Error::Setup(format!(
                    "{} holds another cluster's CA: give this server an empty --data-dir to join",
                    dir.display()
                )));
            }
        }
        write_private(&dir.join("ca.key"), &b.ca_key)?;
        write_private(&dir.join(SERVICE_ACCOUNT_KEY), &b.service_account_key)?;
        write_private(&dir.join(KUBELET_CA_KEY), &b.kubelet_ca_key)?;
        write_private(&dir.join(KUBELET_CA_CERT), &b.kubelet_ca_cert)?;
        write_private(&ca, &b.ca_cert)
    }

    /// The CA key (PEM), for the controller manager's signer.
    pub fn ca_key_pem(&self) -> Result<String, Error> {
        read(&self.dir.join("ca.key"))
    }

    /// Loads the PKI a server made under `dir`, making nothing (for tools beside the
    /// server, such as `berth cluster`).
    pub fn load(dir: &Path) -> Result<Pki, Error> {
        Ok(Pki {
            ca_cert: read(&dir.join(CA_CERT))?,
            serving_cert: read(&dir.join("serving.crt"))?,
            serving_key: read(&dir.join("serving.key"))?,
            dir: dir.to_path_buf(),
        })
    }

    /// Writes a kubeconfig at `path` for node `node` at the server `url`: a client
    /// certificate for `system:node:NODE` in `system:nodes`, the identity the Node
    /// authorizer and NodeRestriction know. Kept when it exists, unless its
    /// certificate ends within [`RENEW_BEFORE`] or it names another CA (one made
    /// anew).
    pub fn write_node_kubeconfig(&self, path: &Path, node: &str, url: &str) -> Result<(), Error> {
        let kept = kubeconfig_pems(path).is_some_and(|(ca, cert)| {
            ca == self.ca_cert && !due_for_renewal(&cert, Some(&self.ca_cert))
        });
        if kept {
            return Ok(());
        }
        let (cert, key) = self.issue_client(&format!("system:node:{node}"), &["system:nodes"])?;
        self.write_client_kubeconfig(path, url, &format!("system:node:{node}"), &cert, &key)
    }

    /// Issues a client certificate for `user` in `groups` (for tests and other
    /// components of berth): returns (cert PEM, key PEM).
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<(String, String), Error> {
        let ca_keypair = KeyPair::from_pem(&read(&self.dir.join("ca.key"))?)
            .map_err(|e| pki_err("the CA key", e))?;
        let ca = Issuer::from_ca_cert_pem(&self.ca_cert, ca_keypair)
            .map_err(|e| pki_err("the CA certificate", e))?;
        issue(
            &ca,
            &self.ca_cert,
            LEAF_VALID_FOR,
            user,
            groups,
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// The CA and the client certificate (PEM) a kubeconfig written here embeds.
fn kubeconfig_pems(path: &Path) -> Option<(String, String)> {
    use base64::Engine;
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let pem = |v: &serde_yaml::Value| {
        let b = base64::engine::general_purpose::STANDARD
            .decode(v.as_str()?)
            .ok()?;
        String::from_utf8(b).ok()
    };
    Some((
        pem(&config["clusters"][0]["cluster"]["certificate-authority-data"])?,
        pem(&config["users"][0]["user"]["client-certificate-data"])?,
    ))
}

/// The server's own certificates in `dir` that end within [`RENEW_BEFORE`]: (file,
/// end in unix seconds). It renews them only when it starts (as k3s does), so one
/// running that long is told to restart.
pub fn expiring(dir: &Path) -> Vec<(PathBuf, i64)> {
    let soon = renewal_horizon();
    let mut found = Vec::new();
    let mut check = |path: PathBuf, pem: Option<String>| {
        if let Some(Ok((_, end))) = pem.as_deref().map(berth_join::csr::validity) {
            if end < soon {
                found.push((path, end));
            }
        }
    };
    for f in ["serving.crt", "admin.crt"] {
        check(dir.join(f), std::fs::read_to_string(dir.join(f)).ok());
    }
    let mut nodes: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("node-") && n.ends_with(".kubeconfig"))
        })
        .collect();
    nodes.sort();
    for p in nodes {
        let cert = kubeconfig_pems(&p).map(|(_, c)| c);
        check(p, cert);
    }
    found
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days_left(cert: &str) -> i64 {
        let (_, end) = berth_join::csr::validity(cert).unwrap();
        (end - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400
    }

    #[test]
    fn certificates_run_from_now_a_year_under_a_ten_year_ca() {
        let d = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(d.path(), &[], "https://127.0.0.1:6443").unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (ca_from, _) = berth_join::csr::validity(&pki.ca_cert).unwrap();
        assert!((now - 3700..=now).contains(&ca_from), "{ca_from} vs {now}");
        assert!((3648..=3650).contains(&days_left(&pki.ca_cert)));
        for leaf in [
            &pki.serving_cert,
            &read(&d.path().join("admin.crt")).unwrap(),
        ] {
            let (from, _) = berth_join::csr::validity(leaf).unwrap();
            assert!((now - 400..=now).contains(&from), "{from} vs {now}");
            assert!((363..=365).contains(&days_left(leaf)));
        }
    }

    #[test]
    fn a_leaf_ending_with_its_ca_is_not_issued_again_at_every_start() {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let now = time::OffsetDateTime::now_utc();
        (p.not_before, p.not_after) = (
            now - time::Duration::hours(1),
            now + time::Duration::days(30),
        );
        let ca_pem = p.self_signed(&key).unwrap().pem();
        let ca = Issuer::from_ca_cert_pem(&ca_pem, key).unwrap();
        let leaf = |days| {
            let (cert, _) = issue(
                &ca,
                &ca_pem,
                time::Duration::days(days),
                "l",
                &[],
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
            )
            .unwrap();
            cert
        };
        assert!(
            !due_for_renewal(&leaf(365), Some(&ca_pem)),
            "capped at the CA's end"
        );
        assert!(
            due_for_renewal(&leaf(10), Some(&ca_pem)),
            "ends before the CA"
        );
        assert!(
            due_for_renewal(&ca_pem, None),
            "the CA itself ends within 90 days"
        );
    }

    #[test]
    fn leaves_near_their_end_are_issued_again_on_start_and_others_kept() {
        let d = tempfile::tempdir().unwrap();
        let url = "https://127.0.0.1:6443";
        let pki = Pki::ensure(d.path(), &[], url).unwrap();
        let node = d.path().join("node-n1.kubeconfig");
        pki.write_node_kubeconfig(&node, "n1", url).unwrap();
        let node_before = std::fs::read_to_string(&node).unwrap();
        // The admin certificate swapped for one with 10 days left.
        let ca = Issuer::from_ca_cert_pem(
            &pki.ca_cert,
            KeyPair::from_pem(&pki.ca_key_pem().unwrap()).unwrap(),
        )
        .unwrap();
        let ten_days = |cn: &str, group: &str| {
            issue(
                &ca,
                &pki.ca_cert,
                time::Duration::days(10),
                cn,
                &[group],
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
            )
            .unwrap()
        };
        let (short, key) = ten_days("system:admin", "system:masters");
        write_private(&d.path().join("admin.crt"), &short).unwrap();
        write_private(&d.path().join("admin.key"), &key).unwrap();
        let serving_before = pki.serving_cert.clone();
        let again = Pki::ensure(d.path(), &[], url).unwrap();
        let admin = read(&d.path().join("admin.crt")).unwrap();
        assert!(days_left(&admin) >= 363, "renewed: {}", days_left(&admin));
        assert_eq!(
            again.serving_cert, serving_before,
            "a serving cert far from its end is kept"
        );
        pki.write_node_kubeconfig(&node, "n1", url).unwrap();
        assert_eq!(std::fs::read_to_string(&node).unwrap(), node_before);
        // A node kubeconfig whose certificate is near its end is written again.
        let (short, key) = ten_days("system:node:n1", "system:nodes");
        pki.write_client_kubeconfig(&node, url, "system:node:n1", &short, &key)
            .unwrap();
        let node_cert = |p: &Path| kubeconfig_pems(p).unwrap().1;
        assert!((9..=10).contains(&days_left(&node_cert(&node))));
        let end = berth_join::csr::validity(&short).unwrap().1;
        assert_eq!(expiring(d.path()), vec![(node.clone(), end)]);
        pki.write_node_kubeconfig(&node, "n1", url).unwrap();
        assert!(days_left(&node_cert(&node)) >= 363);
        assert_eq!(expiring(d.path()), vec![]);
    }
}
