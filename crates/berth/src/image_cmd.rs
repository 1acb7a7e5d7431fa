//! `berth image ...`, `images`, `load`, `save`, `import`, `rmi`, `tag`, `history`,
//! `system df|prune`: the image store from the command line, in docker's words.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use berth_image::archive::SaveFormat;
use berth_image::commit::NewImage;
use berth_image::inspect::{human_age, human_size};
use berth_image::oci::Platform;
use berth_image::Reference;

use crate::table::Table;
use crate::Ctx;

/// `berth image` subcommands.
#[derive(Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show images as JSON (as `docker image inspect`).
    Inspect(InspectArgs),
    /// Show an image's history.
    History(HistoryArgs),
    /// Remove images.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Remove unused images and the data only they used.
    Prune(PruneArgs),
    /// Write an image's root filesystem (all layers flattened) as a tar.
    Export(ExportArgs),
    /// Pull an image from a registry.
    Pull(crate::registry_cmd::PullArgs),
    /// Push an image to a registry.
    Push(crate::registry_cmd::PushArgs),
    /// Load images from an archive.
    Load(LoadArgs),
    /// Save images to an archive.
    Save(SaveArgs),
    /// Create an image from a root filesystem tarball.
    Import(ImportArgs),
}

/// `berth system` subcommands.
#[derive(Subcommand)]
pub enum SystemCommand {
    /// Show disk usage.
    Df,
    /// Remove stopped containers, then unused images and the data only they used.
    Prune(PruneArgs),
    /// Serve the containers' /proc view (started by berth when a container needs it;
    /// exits 30 s after the last container).
    #[command(hide = true)]
    ProcviewServe,
    /// The network helper: answers DNS for user-defined networks, and 30 s after the
    /// last container takes unused bridges and firewall tables away (started by berth).
    #[command(hide = true)]
    NetworkHelper,
}

/// Arguments of `images`.
#[derive(Args)]
pub struct LsArgs {
    /// Only image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Full IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table (default) or json.
    #[arg(long)]
    format: Option<String>,
    /// Only images whose name matches (repository[:tag]).
    reference: Option<String>,
}

/// Arguments of `image inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// Go-template-like format: `{{.Id}}`, `{{.Config.Env}}`, `{{json .RootFS}}`.
    #[arg(short, long)]
    format: Option<String>,
    /// Platform of a multi-platform image.
    #[arg(long)]
    platform: Option<String>,
    /// Images.
    #[arg(required = true)]
    images: Vec<String>,
}

/// Arguments of `history`.
#[derive(Args)]
pub struct HistoryArgs {
    /// Full commands and IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Sizes in bytes, times as RFC 3339.
    #[arg(short = 'H', long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    human: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Image.
    image: String,
}

/// Arguments of `rmi`.
#[derive(Args)]
pub struct RmArgs {
    /// Remove even when a container uses the image or it has several names.
    #[arg(short, long)]
    force: bool,
    /// Images.
    #[arg(required = true)]
    images: Vec<String>,
}

/// Arguments of `tag`.
#[derive(Args)]
pub struct TagArgs {
    /// Existing image.
    source: String,
    /// New name.
    target: String,
}

/// Arguments of `image prune` / `system prune`.
#[derive(Args)]
pub struct PruneArgs {
    /// Remove every image no container uses, not only untagged ones.
    #[arg(short, long)]
    all: bool,
    /// Do not ask (berth never asks; accepted for docker compatibility).
    #[arg(short, long)]
    force: bool,
}

/// Arguments of `image export`.
#[derive(Args)]
pub struct ExportArgs {
    /// File to write (default: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Platform of a multi-platform image.
    #[arg(long)]
    platform: Option<String>,
    /// Image.
    image: String,
}

/// Arguments of `load`.
#[derive(Args)]
pub struct LoadArgs {
    /// Archive file or OCI layout directory (default: stdin).
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Only print the loaded names.
    #[arg(short, long)]
    quiet: bool,
    /// Platform that must be complete in a multi-platform archive.
    #[arg(long)]
    platform: Option<String>,
}

/// Arguments of `save`.
#[derive(Args)]
pub struct SaveArgs {
    /// File (or directory for oci-dir) to write (default: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// docker-archive (default), oci-archive or oci-dir.
    #[arg(long, default_value = "docker-archive")]
    format: String,
    /// Platform of multi-platform images (docker-archive).
    #[arg(long)]
    platform: Option<String>,
    /// Images.
    #[arg(required = true)]
    images: Vec<String>,
}

/// Arguments of `import`.
#[derive(Args)]
pub struct ImportArgs {
    /// Dockerfile-style change to the config: `CMD ["sh"]`, `ENV A=b`, `WORKDIR /x`,
    /// `ENTRYPOINT`, `USER`, `EXPOSE`, `LABEL k=v`, `VOLUME`, `STOPSIGNAL`.
    #[arg(short, long = "change")]
    change: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Tarball (any compression), or `-` for stdin.
    file: String,
    /// Name for the image.
    reference: Option<String>,
}

fn platform_opt(p: &Option<String>) -> anyhow::Result<Option<Platform>> {
    p.as_deref()
        .map(str::parse::<Platform>)
        .transpose()
        .map_err(Into::into)
}

fn platform(p: &Option<String>) -> anyhow::Result<Platform> {
    Ok(match p {
        Some(s) => s.parse()?,
        None => Platform::host(),
    })
}

fn short_id(d: &berth_image::Digest, no_trunc: bool) -> String {
    if no_trunc {
        d.to_string()
    } else {
        d.short().to_string()
    }
}

/// Dispatches `berth image ...`.
pub async fn run(ctx: &Ctx, c: ImageCommand) -> anyhow::Result<()> {
    match c {
        ImageCommand::Ls(a) => ls(ctx, a),
        ImageCommand::Inspect(a) => inspect(ctx, a),
        ImageCommand::History(a) => history(ctx, a),
        ImageCommand::Rm(a) => rm(ctx, a),
        ImageCommand::Tag(a) => tag(ctx, a),
        ImageCommand::Prune(a) => prune(ctx, a),
        ImageCommand::Export(a) => export(ctx, a),
        ImageCommand::Pull(a) => crate::registry_cmd::pull(ctx, a).await,
        ImageCommand::Push(a) => crate::registry_cmd::push(ctx, a).await,
        ImageCommand::Load(a) => load(ctx, a),
        ImageCommand::Save(a) => save(ctx, a),
        ImageCommand::Import(a) => import(ctx, a),
    }
}

/// `berth images`.
pub fn ls(ctx: &Ctx, a: LsArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let mut rows = store.summaries()?;
    if let Some(r) = &a.reference {
        let (repo, tag) = match r.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            Some((repo, t)) => (repo.to_string(), Some(t.to_string())),
            None => (r.clone(), None),
        };
        let want = repo
            .parse::<Reference>()
            .map(|r| r.familiar_name())
            .unwrap_or(repo);
        rows.retain(|s| s.repository == want && tag.as_ref().is_none_or(|t| &s.tag == t));
    }
    rows.sort_by(|x, y| {
        y.created
            .cmp(&x.created)
            .then(x.repository.cmp(&y.repository))
    });
    if a.quiet {
        let mut seen = Vec::new();
        for r in rows {
            let id = short_id(&r.id, a.no_trunc);
            if !seen.contains(&id) {
                println!("{id}");
                seen.push(id);
            }
        }
        return Ok(());
    }
    if a.format.as_deref() == Some("json") {
        let v: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({"Repository": r.repository, "Tag": r.tag, "ID": r.id.to_string(), "Digest": r.digest.to_string(),
                       "CreatedAt": r.created, "CreatedSince": human_age(&r.created), "Size": r.size})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if let Some(f) = &a.format {
        bail!("--format {f:?}: use json (Go templates are not supported here)");
    }
    let mut headers = vec!["REPOSITORY", "TAG"];
    if a.digests {
        headers.push("DIGEST");
    }
    headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let mut t = Table::new(&headers);
    for r in rows {
        let mut cells = vec![r.repository, r.tag];
        if a.digests {
            cells.push(r.digest.to_string());
        }
        cells.extend([
            short_id(&r.id, a.no_trunc),
            human_age(&r.created),
            human_size(r.size),
        ]);
        t.row(cells);
    }
    print!("{}", t.render());
    Ok(())
}

/// Applies a small subset of Go templates: `{{.A.B}}` and `{{json .A}}`.
pub fn apply_template(v: &Value, tmpl: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = tmpl;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .with_context(|| format!("template {tmpl:?}: unclosed {{{{"))?;
        let expr = rest[start + 2..start + end].trim();
        let (json_out, path) = match expr.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, expr),
        };
        if !path.starts_with('.') {
            bail!("template {tmpl:?}: {expr:?} is not supported (use {{{{.Field}}}} or {{{{json .Field}}}})");
        }
        let mut cur = v;
        for part in path[1..].split('.').filter(|p| !p.is_empty()) {
            cur = cur.get(part).unwrap_or(&Value::Null);
        }
        match (json_out, cur) {
            (true, c) => out.push_str(&serde_json::to_string(c)?),
            (false, Value::String(s)) => out.push_str(s),
            (false, Value::Null) => out.push_str("<no value>"),
            (false, Value::Array(a)) => {
                let items: Vec<String> = a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect();
                out.push_str(&format!("[{}]", items.join(" ")));
            }
            (false, c) => out.push_str(&c.to_string()),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn inspect(ctx: &Ctx, a: InspectArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let p = platform_opt(&a.platform)?;
    let mut all = Vec::new();
    for i in &a.images {
        all.push(store.inspect(i, p.as_ref())?);
    }
    match &a.format {
        Some(f) => {
            for v in &all {
                println!("{}", apply_template(v, f)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&all)?),
    }
    Ok(())
}

/// `berth history`.
pub fn history(ctx: &Ctx, a: HistoryArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let rows = store.history(&a.image, None)?;
    if a.quiet {
        for r in rows {
            println!("{}", r.id);
        }
        return Ok(());
    }
    let mut t = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
    for r in rows {
        let by = if a.no_trunc || r.created_by.chars().count() <= 45 {
            r.created_by
        } else {
            format!("{}…", r.created_by.chars().take(44).collect::<String>())
        };
        let (created, size) = if a.human {
            (human_age(&r.created), human_size(r.size))
        } else {
            (r.created, r.size.to_string())
        };
        t.row(vec![r.id, created, by, size, r.comment]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `berth rmi`.
pub fn rm(ctx: &Ctx, a: RmArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let mut failed = Vec::new();
    for i in &a.images {
        match store.remove_image(i, a.force) {
            Ok(r) => {
                for n in r.untagged {
                    if !n.starts_with("sha256:") {
                        println!("Untagged: {n}");
                    }
                }
                if let Some(d) = r.deleted {
                    println!("Deleted: {d}");
                }
            }
            Err(e) => {
                eprintln!("Error: {e}");
                failed.push(i.clone());
            }
        }
    }
    // Space is reclaimed now if the store is idle; never wait for a running pull.
    match store.try_prune() {
        Ok(Some(_)) => {}
        Ok(None) => {
            eprintln!("note: the store is busy; `berth image prune` reclaims the space later")
        }
        Err(e) => eprintln!("warning: reclaiming space failed ({e}); `berth image prune` retries"),
    }
    if !failed.is_empty() {
        bail!("{} of {} images not removed", failed.len(), a.images.len());
    }
    Ok(())
}

/// `berth tag`.
pub fn tag(ctx: &Ctx, a: TagArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let rec = store.find_image(&a.source)?;
    let target: Reference = a.target.parse()?;
    if target.digest.is_some() {
        bail!("tag {:?}: a new name cannot carry a digest", a.target);
    }
    store.set_image(&target.to_string(), &rec.digest, &rec.media_type)?;
    Ok(())
}

fn prune(ctx: &Ctx, a: PruneArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let names = store.prune_images(a.all)?;
    let report = store.prune()?;
    if !names.is_empty() {
        println!("Deleted Images:");
        for n in &names {
            if n.starts_with("sha256:") {
                println!("deleted: {n}");
            } else {
                println!("untagged: {n}");
            }
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(report.bytes));
    Ok(())
}

/// `berth system ...`.
pub fn system(ctx: &Ctx, c: SystemCommand) -> anyhow::Result<()> {
    match c {
        SystemCommand::Prune(a) => {
            let removed = crate::container_cmd::prune_containers(ctx)?;
            if !removed.is_empty() {
                println!("Deleted Containers:");
                for id in removed {
                    println!("{id}");
                }
                println!();
            }
            prune(ctx, a)
        }
        SystemCommand::ProcviewServe => {
            berth_procview::serve(
                &berth_procview::mountpoint(),
                std::time::Duration::from_secs(30),
            )?;
            Ok(())
        }
        SystemCommand::NetworkHelper => {
            berth_net::dns::serve(
                &berth_net::network::Networks::host(),
                std::time::Duration::from_secs(30),
            )?;
            Ok(())
        }
        SystemCommand::Df => {
            let store = ctx.store()?;
            let u = store.usage()?;
            let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
            let pct = (u.images_reclaimable * 100)
                .checked_div(u.images_bytes)
                .map(|p| format!(" ({p}%)"))
                .unwrap_or_default();
            t.row(vec![
                "Images".into(),
                u.images.to_string(),
                u.images_active.to_string(),
                human_size(u.images_bytes),
                format!("{}{pct}", human_size(u.images_reclaimable)),
            ]);
            t.row(vec![
                "Containers".into(),
                u.containers.to_string(),
                u.containers.to_string(),
                human_size(u.containers_bytes),
                "0B (0%)".into(),
            ]);
            print!("{}", t.render());
            Ok(())
        }
    }
}

/// Where an archive goes: a file (written under a temporary name and renamed when
/// complete, so a failed save never destroys an existing archive) or stdout.
enum Output {
    File(std::io::BufWriter<tempfile::NamedTempFile>, PathBuf),
    Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>),
}

impl Output {
    fn open(path: &Option<PathBuf>, what: &str) -> anyhow::Result<Output> {
        match path {
            Some(p) => {
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let tmp = tempfile::Builder::new()
                    .prefix(".berth-save-")
                    .tempfile_in(&dir)
                    .with_context(|| format!("create a file in {}", dir.display()))?;
                Ok(Output::File(
                    std::io::BufWriter::with_capacity(1 << 20, tmp),
                    p.clone(),
                ))
            }
            None if std::io::stdout().is_terminal() => {
                bail!("refusing to write {what} to a terminal: use -o FILE or redirect the output")
            }
            None => Ok(Output::Stdout(std::io::BufWriter::with_capacity(
                1 << 20,
                std::io::stdout().lock(),
            ))),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::File(w, _) => w,
            Output::Stdout(w) => w,
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Output::File(w, dest) => {
                let tmp = w.into_inner().map_err(|e| e.into_error())?;
                // Temporary files are private; an archive is as readable as any new file.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
                tmp.persist(&dest)
                    .with_context(|| format!("write {}", dest.display()))?;
            }
            Output::Stdout(mut w) => w.flush()?,
        }
        Ok(())
    }
}

fn export(ctx: &Ctx, a: ExportArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let img = store.resolve_for(&a.image, platform_opt(&a.platform)?.as_ref())?;
    let mut out = Output::open(&a.output, "a tar archive")?;
    store.export_image(&img, out.writer())?;
    out.finish()
}

/// `berth load`.
pub fn load(ctx: &Ctx, a: LoadArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let p = platform(&a.platform)?;
    let loaded = match &a.input {
        Some(path) => store.load(path, &p)?,
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no archive given: use -i FILE or pipe one to stdin");
            }
            store.load_stream(std::io::stdin().lock(), &p)?
        }
    };
    for l in loaded {
        if l.names.is_empty() {
            println!("Loaded image ID: {}", l.id);
        }
        for n in l.names {
            let shown = n.parse::<Reference>().map(|r| {
                let mut s = r.familiar_name();
                if let Some(t) = &r.tag {
                    s = format!("{s}:{t}");
                }
                s
            });
            println!("Loaded image: {}", shown.unwrap_or(n));
        }
    }
    Ok(())
}

/// `berth save`.
pub fn save(ctx: &Ctx, a: SaveArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let format: SaveFormat = a.format.parse()?;
    if format == SaveFormat::OciDir {
        let dir = a.output.context("--format oci-dir needs -o DIRECTORY")?;
        store.save_dir(&a.images, &dir)?;
        return Ok(());
    }
    let mut out = Output::open(&a.output, "an archive")?;
    store.save(&a.images, format, &platform(&a.platform)?, out.writer())?;
    out.finish()
}

/// Parses a Dockerfile-style `--change` into config keys.
pub fn parse_change(c: &str) -> anyhow::Result<(String, Value)> {
    let (instr, rest) = c
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or((c.trim(), ""));
    let rest = rest.trim();
    let list = || -> Value {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => json!(v),
            Err(_) => json!(["/bin/sh", "-c", rest]),
        }
    };
    let kv = |sep_required: bool| -> anyhow::Result<(String, String)> {
        match rest.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().trim_matches('"').to_string())),
            None if !sep_required => match rest.split_once(char::is_whitespace) {
                Some((k, v)) => Ok((k.to_string(), v.trim().to_string())),
                None => bail!("--change {c:?}: expected KEY=VALUE"),
            },
            None => bail!("--change {c:?}: expected KEY=VALUE"),
        }
    };
    Ok(match instr.to_ascii_uppercase().as_str() {
        "CMD" => ("Cmd".into(), list()),
        "ENTRYPOINT" => ("Entrypoint".into(), list()),
        "WORKDIR" => ("WorkingDir".into(), json!(rest)),
        "USER" => ("User".into(), json!(rest)),
        "STOPSIGNAL" => ("StopSignal".into(), json!(rest)),
        "ENV" => {
            let (k, v) = kv(false)?;
            ("Env".into(), json!([format!("{k}={v}")]))
        }
        "LABEL" => {
            let (k, v) = kv(true)?;
            ("Labels".into(), json!({ k: v }))
        }
        "EXPOSE" => {
            let port = if rest.contains('/') { rest.to_string() } else { format!("{rest}/tcp") };
            ("ExposedPorts".into(), json!({ port: {} }))
        }
        "VOLUME" => {
            let vols: Vec<String> = serde_json::from_str(rest).unwrap_or_else(|_| vec![rest.to_string()]);
            let m: serde_json::Map<String, Value> = vols.into_iter().map(|v| (v, json!({}))).collect();
            ("Volumes".into(), Value::Object(m))
        }
        other => bail!(
            "--change {c:?}: {other} is not supported (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)"
        ),
    })
}

/// Folds `--change` values into one config map (ENV, LABEL, ... accumulate).
pub fn changes(list: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut m = serde_json::Map::new();
    for c in list {
        let (k, v) = parse_change(c)?;
        match (m.get_mut(&k), v) {
            (Some(Value::Array(a)), Value::Array(b)) if k == "Env" => a.extend(b),
            (Some(Value::Object(a)), Value::Object(b)) => a.extend(b),
            (_, v) => {
                m.insert(k, v);
            }
        }
    }
    Ok(m)
}

/// `berth import`.
pub fn import(ctx: &Ctx, a: ImportArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let reference = a
        .reference
        .as_deref()
        .map(str::parse::<Reference>)
        .transpose()?;
    let opts = NewImage {
        reference,
        comment: a.message.clone(),
        created_by: format!("berth import {}", a.file),
        config_changes: changes(&a.change)?,
        ..Default::default()
    };
    let digest = if a.file == "-" {
        store.import(std::io::stdin().lock(), &opts)?
    } else {
        let f = std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file))?;
        store.import(f, &opts)?
    };
    let img = store.resolve_digest(&digest, &Platform::host())?;
    println!("{}", img.config_digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let v = json!({"Id": "sha256:x", "Config": {"Env": ["A=1", "B=2"]}, "Size": 5});
        assert_eq!(apply_template(&v, "{{.Id}}").unwrap(), "sha256:x");
        assert_eq!(
            apply_template(&v, "{{.Config.Env}} {{.Size}}").unwrap(),
            "[A=1 B=2] 5"
        );
        assert_eq!(
            apply_template(&v, "{{json .Config.Env}}").unwrap(),
            r#"["A=1","B=2"]"#
        );
        assert!(apply_template(&v, "{{range .X}}").is_err());
    }

    #[test]
    fn changes_fold() {
        let m = changes(&[
            "ENV A=1".into(),
            "ENV B 2".into(),
            r#"CMD ["sh"]"#.into(),
            "EXPOSE 80".into(),
        ])
        .unwrap();
        assert_eq!(m["Env"], json!(["A=1", "B=2"]));
        assert_eq!(m["Cmd"], json!(["sh"]));
        assert_eq!(m["ExposedPorts"], json!({"80/tcp": {}}));
        assert!(parse_change("FROM x").is_err());
    }
}
