//! `berth build`: an image from a Dockerfile — FROM, ARG, ENV, WORKDIR, USER, EXPOSE,
//! LABEL, VOLUME, CMD, ENTRYPOINT, SHELL, STOPSIGNAL as config steps; COPY and ADD (local
//! files, directories and tar archives) as layers written straight from the context;
//! RUN in a container whose changes are committed. Each step's result is cached under
//! a key of its parent image, its instruction and, for COPY/ADD, the content copied.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};

use berth_engine::docker::config::RunConfig;
use berth_engine::docker::State;
use berth_engine::Engine;
use berth_image::commit::NewImage;
use berth_image::oci::Platform;
use berth_image::{Digest, ResolvedImage};

use crate::Ctx;

/// Arguments of `build`.
#[derive(Args)]
pub struct BuildArgs {
    /// Name (and tag) for the image; may be given several times.
    #[arg(short, long = "tag")]
    tag: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short, long = "file")]
    file: Option<PathBuf>,
    /// Build-time variable NAME=VALUE for ARG.
    #[arg(long)]
    build_arg: Vec<String>,
    /// Do not use the step cache.
    #[arg(long)]
    no_cache: bool,
    /// Only print the final image ID.
    #[arg(short, long)]
    quiet: bool,
    /// The build context directory.
    context: PathBuf,
}

/// One Dockerfile instruction.
#[derive(Clone, Debug)]
struct Instr {
    line: usize,
    cmd: String,
    rest: String,
}

/// Splits a Dockerfile into instructions (continuation lines joined, comments dropped).
fn parse(text: &str) -> anyhow::Result<Vec<Instr>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if cur.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if cur.is_empty() {
            start = i + 1;
        } else if line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(l) => {
                cur.push_str(l);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                let (cmd, rest) = cur
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((cur.trim(), ""));
                out.push(Instr {
                    line: start,
                    cmd: cmd.to_ascii_uppercase(),
                    rest: rest.trim().to_string(),
                });
                cur.clear();
            }
        }
    }
    if !cur.is_empty() {
        bail!("Dockerfile line {start}: the last instruction ends with a line continuation");
    }
    Ok(out)
}

/// `$VAR` and `${VAR}` from `vars`.
fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'$' {
            out.push('$');
            i += 2;
            continue;
        }
        if b[i] == b'$' {
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                match s[i + 2..].find('}') {
                    Some(end) => (&s[i + 2..i + 2 + end], i + 3 + end),
                    None => ("", i + 1),
                }
            } else {
                let len = s[i + 1..]
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                (&s[i + 1..i + 1 + len], i + 1 + len)
            };
            if !name.is_empty() {
                out.push_str(vars.get(name).map(String::as_str).unwrap_or(""));
                i = next;
                continue;
            }
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A JSON array form (`["a", "b"]`), if the text is one.
fn json_form(s: &str) -> Option<Vec<String>> {
    s.trim()
        .starts_with('[')
        .then(|| serde_json::from_str(s.trim()).ok())
        .flatten()
}

/// `.dockerignore` patterns: `*`, `?`, directory prefixes and `!` exceptions.
struct Ignore(Vec<(bool, String)>);

impl Ignore {
    fn load(context: &Path) -> Ignore {
        let text = std::fs::read_to_string(context.join(".dockerignore")).unwrap_or_default();
        Ignore(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| match l.strip_prefix('!') {
                    Some(p) => (
                        false,
                        p.trim_start_matches("./").trim_end_matches('/').to_string(),
                    ),
                    None => (
                        true,
                        l.trim_start_matches("./").trim_end_matches('/').to_string(),
                    ),
                })
                .collect(),
        )
    }

    fn ignored(&self, rel: &str) -> bool {
        let mut ignored = false;
        for (exclude, pat) in &self.0 {
            // A pattern matches the path or any of its parent directories.
            let mut p = Path::new(rel);
            let mut hit = false;
            loop {
                if glob(pat, &p.to_string_lossy()) {
                    hit = true;
                    break;
                }
                match p.parent() {
                    Some(q) if !q.as_os_str().is_empty() => p = q,
                    _ => break,
                }
            }
            if hit {
                ignored = *exclude;
            }
        }
        ignored
    }
}

/// Shell-style matching of `*` (not across `/`, except `**`) and `?`.
fn glob(pat: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) if p.get(1) == Some(&b'*') => {
                (0..=s.len()).any(|i| go(&p[2..], &s[i..]))
            }
            (Some(b'*'), _) => (0..=s.len())
                .take_while(|i| *i == 0 || s[i - 1] != b'/')
                .any(|i| go(&p[1..], &s[i..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pat.as_bytes(), s.as_bytes())
}

/// The step cache: key → image manifest digest.
struct Cache {
    path: PathBuf,
    map: HashMap<String, String>,
}

impl Cache {
    fn load(root: &Path) -> Cache {
        let path = root.join("build-cache.json");
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Cache { path, map }
    }

    fn save(&self) {
        let tmp = self.path.with_extension("tmp");
        if std::fs::write(&tmp, serde_json::to_vec(&self.map).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.path);
        }
    }
}

struct Builder<'a> {
    engine: &'a Engine,
    context: PathBuf,
    ignore: Ignore,
    quiet: bool,
    cur: Option<ResolvedImage>,
    args: BTreeMap<String, String>,
    given_args: BTreeMap<String, String>,
    shell: Vec<String>,
    cache: Cache,
    use_cache: bool,
}

impl Builder<'_> {
    fn say(&self, s: &str) {
        if !self.quiet {
            println!("{s}");
        }
    }

    fn vars(&self) -> BTreeMap<String, String> {
        let mut v = self.args.clone();
        if let Some(img) = &self.cur {
            for e in img
                .config
                .pointer("/config/Env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some((k, val)) = e.as_str().and_then(|s| s.split_once('=')) {
                    v.insert(k.to_string(), val.to_string());
                }
            }
        }
        v
    }

    fn cur(&self, i: &Instr) -> anyhow::Result<&ResolvedImage> {
        self.cur
            .as_ref()
            .with_context(|| format!("Dockerfile line {}: {} before FROM", i.line, i.cmd))
    }

    fn set(&mut self, d: &Digest) -> anyhow::Result<()> {
        self.cur = Some(self.engine.images().resolve_digest(d, &Platform::host())?);
        Ok(())
    }

    /// Looks a step up in the cache; on a miss, runs `make` and remembers its result.
    fn step(
        &mut self,
        key_parts: &[&str],
        make: impl FnOnce(&mut Self) -> anyhow::Result<Digest>,
    ) -> anyhow::Result<()> {
        let parent = self
            .cur
            .as_ref()
            .map(|c| c.manifest_digest.to_string())
            .unwrap_or_default();
        let key = Digest::of(format!("{parent}\n{}", key_parts.join("\n")).as_bytes()).to_string();
        if self.use_cache {
            if let Some(d) = self
                .cache
                .map
                .get(&key)
                .and_then(|d| d.parse::<Digest>().ok())
            {
                if self
                    .engine
                    .images()
                    .resolve_digest(&d, &Platform::host())
                    .is_ok()
                {
                    self.say(" ---> Using cache");
                    return self.set(&d);
                }
            }
        }
        let d = make(self)?;
        self.cache.map.insert(key, d.to_string());
        self.cache.save();
        self.set(&d)
    }

    fn config_step(
        &mut self,
        i: &Instr,
        changes: serde_json::Map<String, Value>,
    ) -> anyhow::Result<()> {
        let text = format!("{} {}", i.cmd, i.rest);
        let cur = self.cur(i)?.clone();
        self.step(&[&text], |b| {
            let opts = NewImage {
                created_by: format!("/bin/sh -c #(nop) {text}"),
                config_changes: changes,
                ..Default::default()
            };
            Ok(b.engine.images().derive(&cur, None, &opts)?)
        })
    }

    fn from(&mut self, i: &Instr) -> anyhow::Result<()> {
        let rest = substitute(&i.rest, &self.args);
        let image = rest
            .split_whitespace()
            .next()
            .with_context(|| format!("Dockerfile line {}: FROM needs an image", i.line))?;
        if rest
            .split_whitespace()
            .nth(1)
            .is_some_and(|w| w.eq_ignore_ascii_case("as"))
        {
            bail!(
                "Dockerfile line {}: multi-stage builds (FROM ... AS) are not supported yet",
                i.line
            );
        }
        let d = if image == "scratch" {
            let p = Platform::host();
            let config = json!({"architecture": p.arch, "os": p.os, "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []});
            self.engine
                .images()
                .store_image(&config, Vec::new(), None)?
        } else {
            let img = self
                .engine
                .images()
                .resolve_stored(image)
                .with_context(|| format!("Dockerfile line {}: FROM {image}", i.line))?;
            img.manifest_digest
        };
        self.set(&d)
    }

    /// COPY and ADD: a layer written from the context.
    fn copy(&mut self, i: &Instr, add: bool) -> anyhow::Result<()> {
        let vars = self.vars();
        let mut words: Vec<String> = match json_form(&i.rest) {
            Some(v) => v,
            None => i.rest.split_whitespace().map(String::from).collect(),
        };
        let mut chown: Option<(u64, u64)> = None;
        while words.first().is_some_and(|w| w.starts_with("--")) {
            let flag = words.remove(0);
            match flag.split_once('=') {
                Some(("--chown", v)) => {
                    let (u, g) = v.split_once(':').unwrap_or((v, v));
                    chown = Some((
                        u.parse().with_context(|| {
                            format!("Dockerfile line {}: --chown takes numeric uid:gid", i.line)
                        })?,
                        g.parse().with_context(|| {
                            format!("Dockerfile line {}: --chown takes numeric uid:gid", i.line)
                        })?,
                    ));
                }
                _ => bail!(
                    "Dockerfile line {}: {} {flag} is not supported",
                    i.line,
                    i.cmd
                ),
            }
        }
        if words.len() < 2 {
            bail!(
                "Dockerfile line {}: {} needs a source and a destination",
                i.line,
                i.cmd
            );
        }
        let dest_raw = substitute(&words.pop().expect("two words"), &vars);
        let workdir = self
            .cur(i)?
            .config
            .pointer("/config/WorkingDir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string();
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", workdir.trim_end_matches('/'))
        };
        let into_dir = dest_raw.ends_with('/') || words.len() > 1;
        // Every source, resolved inside the context (no `..` out of it).
        let mut sources = Vec::new();
        for w in &words {
            let w = substitute(w, &vars);
            if w.contains("://") {
                bail!(
                    "Dockerfile line {}: {} of a URL is not supported (no downloads during builds)",
                    i.line,
                    i.cmd
                );
            }
            let rel = Path::new(w.trim_start_matches('/'));
            if rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                bail!(
                    "Dockerfile line {}: {w:?} is outside the build context",
                    i.line
                );
            }
            let (dir, pat) = match rel.file_name().map(|f| f.to_string_lossy().into_owned()) {
                Some(f) if f.contains('*') || f.contains('?') => {
                    (rel.parent().unwrap_or(Path::new("")).to_path_buf(), Some(f))
                }
                _ => (rel.to_path_buf(), None),
            };
            match pat {
                Some(p) => {
                    let mut found: Vec<PathBuf> = std::fs::read_dir(self.context.join(&dir))
                        .with_context(|| format!("Dockerfile line {}: {w}", i.line))?
                        .flatten()
                        .filter(|e| glob(&p, &e.file_name().to_string_lossy()))
                        .map(|e| dir.join(e.file_name()))
                        .filter(|r| !self.ignore.ignored(&r.to_string_lossy()))
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        bail!(
                            "Dockerfile line {}: no file in the context matches {w:?}",
                            i.line
                        );
                    }
                    sources.extend(found);
                }
                None => {
                    if self.ignore.ignored(&rel.to_string_lossy())
                        || !self.context.join(rel).exists()
                    {
                        bail!("Dockerfile line {}: {w:?} is not in the build context (or .dockerignore excludes it)", i.line);
                    }
                    sources.push(rel.to_path_buf());
                }
            }
        }
        let into_dir = into_dir || sources.len() > 1;
        // The tar, built once: its hash is part of the cache key.
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        let dest_rel = dest
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        let mut dirs_made = std::collections::BTreeSet::new();
        let mut parent_dirs = |b: &mut tar::Builder<Vec<u8>>, p: &Path| -> anyhow::Result<()> {
            for a in p.ancestors().collect::<Vec<_>>().into_iter().rev() {
                if a.as_os_str().is_empty() || !dirs_made.insert(a.to_path_buf()) {
                    continue;
                }
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, a, &[][..])?;
            }
            Ok(())
        };
        for src in &sources {
            let full = self.context.join(src);
            let meta = std::fs::symlink_metadata(&full)?;
            if meta.is_dir() {
                // A directory's contents are copied, not the directory itself.
                let target = PathBuf::from(&dest_rel);
                parent_dirs(&mut b, &target)?;
                self.append_tree(&mut b, &full, src, &target, chown)?;
            } else if add && is_archive(&full) {
                let target = PathBuf::from(&dest_rel);
                parent_dirs(&mut b, &target)?;
                let f = std::fs::File::open(&full)?;
                let mut ar = tar::Archive::new(berth_image::compress::decompress(
                    std::io::BufReader::new(f),
                )?);
                for e in ar.entries()? {
                    let mut e = e?;
                    let p = target.join(
                        e.path()?
                            .components()
                            .filter(|c| matches!(c, std::path::Component::Normal(_)))
                            .collect::<PathBuf>(),
                    );
                    let mut h = e.header().clone();
                    let link = e.link_name()?.map(|l| l.into_owned());
                    match link {
                        Some(l) => {
                            b.append_link(&mut h, &p, &l)?;
                        }
                        None => {
                            b.append_data(&mut h, &p, &mut e)?;
                        }
                    }
                }
            } else {
                let target = if into_dir {
                    PathBuf::from(&dest_rel).join(src.file_name().unwrap_or_default())
                } else {
                    PathBuf::from(&dest_rel)
                };
                if let Some(p) = target.parent() {
                    parent_dirs(&mut b, p)?;
                }
                append_one(&mut b, &full, &target, chown)?;
            }
        }
        let data = b.into_inner()?;
        let text = format!("{} {}", i.cmd, i.rest);
        let content = Digest::of(&data).to_string();
        let cur = self.cur(i)?.clone();
        self.step(&[&text, &content], |bld| {
            let layer = bld.engine.images().store_layer(|w| {
                w.write_all(&data)
                    .with_context(|| "write the layer")
                    .map_err(|e| berth_image::Error::invalid(format!("{e:#}")))
            })?;
            let opts = NewImage {
                created_by: format!("/bin/sh -c #(nop) {text}"),
                ..Default::default()
            };
            Ok(bld.engine.images().derive(&cur, Some(&layer), &opts)?)
        })
    }

    fn append_tree(
        &self,
        b: &mut tar::Builder<Vec<u8>>,
        dir: &Path,
        rel: &Path,
        target: &Path,
        chown: Option<(u64, u64)>,
    ) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            if self.ignore.ignored(&r.to_string_lossy()) {
                continue;
            }
            let t = target.join(e.file_name());
            append_one(b, &e.path(), &t, chown)?;
            if e.file_type()?.is_dir() {
                self.append_tree(b, &e.path(), &r, &t, chown)?;
            }
        }
        Ok(())
    }

    fn run(&mut self, i: &Instr) -> anyhow::Result<()> {
        let cur = self.cur(i)?.clone();
        let args = match json_form(&i.rest) {
            Some(v) => v,
            None => {
                let mut v = self.shell.clone();
                v.push(i.rest.clone());
                v
            }
        };
        // Build args are in RUN's environment (and in its cache key), not in the image.
        let used: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let text = format!("RUN {}", i.rest);
        let key_args = used.join("\n");
        let name = format!("build-{}", &berth_engine::core::names::new_id()[..12]);
        self.step(&[&text, &key_args], |b| {
            let cfg = RunConfig {
                image: cur.manifest_digest.to_string(),
                cmd: args,
                entrypoint: Some(String::new()),
                env: used.clone(),
                // RUN steps have the default network, as with docker build.
                network: berth_net::network::DEFAULT.into(),
                ..Default::default()
            };
            let e = b.engine;
            let rec = e.create(cfg, Some(name.clone()))?;
            let result = (|| -> anyhow::Result<Digest> {
                // The step's output as the monitor sends it, until the step ends.
                let (mut child, _, output) = e.start_following(&rec)?;
                let quiet = b.quiet;
                berth_engine::docker::read_frames(output, |_, data| {
                    if !quiet {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(data);
                        let _ = out.flush();
                    }
                });
                let _ = child.wait();
                let code = match e.state(&rec) {
                    State::Exited(c, _) => c,
                    s => bail!("Dockerfile line {}: RUN ended as {}", i.line, s.word()),
                };
                if code != 0 {
                    bail!(
                        "Dockerfile line {}: RUN {} returned a non-zero code: {code}",
                        i.line,
                        i.rest
                    );
                }
                let opts = NewImage {
                    created_by: format!("/bin/sh -c {}", i.rest),
                    ..Default::default()
                };
                Ok(e.commit(&rec, &opts)?)
            })();
            let _ = e.remove(&rec, true);
            result
        })
    }
}

fn is_archive(p: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    let c = berth_image::compress::Compression::sniff(&head[..n]);
    c != berth_image::compress::Compression::None || (n >= 262 && &head[257..262] == b"ustar")
}

fn append_one(
    b: &mut tar::Builder<Vec<u8>>,
    src: &Path,
    target: &Path,
    chown: Option<(u64, u64)>,
) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    let mut h = tar::Header::new_gnu();
    h.set_metadata(&meta);
    // Copied files belong to root unless --chown says otherwise, as with docker.
    let (u, g) = chown.unwrap_or((0, 0));
    h.set_uid(u);
    h.set_gid(g);
    if meta.file_type().is_symlink() {
        let l = std::fs::read_link(src)?;
        b.append_link(&mut h, target, &l)?;
    } else if meta.is_dir() {
        h.set_size(0);
        b.append_data(&mut h, target, &[][..])?;
    } else {
        let f = std::fs::File::open(src)?;
        b.append_data(&mut h, target, f)?;
    }
    Ok(())
}

/// `berth build`.
pub fn build(ctx: &Ctx, a: BuildArgs) -> anyhow::Result<()> {
    let engine = Engine::open(&ctx.root)?;
    let context = std::fs::canonicalize(&a.context)
        .with_context(|| format!("build context {}", a.context.display()))?;
    let file = a.file.clone().unwrap_or_else(|| context.join("Dockerfile"));
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    let instrs = parse(&text)?;
    if !instrs.iter().any(|i| i.cmd == "FROM") {
        bail!("{}: no FROM instruction", file.display());
    }
    let mut given = BTreeMap::new();
    for ba in &a.build_arg {
        let (k, v) = ba
            .split_once('=')
            .with_context(|| format!("--build-arg {ba:?}: use NAME=VALUE"))?;
        given.insert(k.to_string(), v.to_string());
    }
    let tags: Vec<berth_image::Reference> =
        a.tag.iter().map(|t| t.parse()).collect::<Result<_, _>>()?;
    let mut b = Builder {
        engine: &engine,
        ignore: Ignore::load(&context),
        context,
        quiet: a.quiet,
        cur: None,
        args: BTreeMap::new(),
        given_args: given,
        shell: vec!["/bin/sh".into(), "-c".into()],
        cache: Cache::load(&ctx.root),
        use_cache: !a.no_cache,
    };
    let n = instrs.len();
    for (k, i) in instrs.iter().enumerate() {
        b.say(&format!("STEP {}/{n}: {} {}", k + 1, i.cmd, i.rest));
        let vars = b.vars();
        let sub = |s: &str| substitute(s, &vars);
        let mut changes = serde_json::Map::new();
        match i.cmd.as_str() {
            "FROM" => b.from(i)?,
            "ARG" => {
                let (k2, def) = i.rest.split_once('=').map_or((i.rest.as_str(), None), |(k2, v)| (k2, Some(v)));
                let v = b.given_args.get(k2.trim()).cloned().or(def.map(|d| sub(d.trim_matches('"')))).unwrap_or_default();
                b.args.insert(k2.trim().to_string(), v);
            }
            "RUN" => b.run(i)?,
            "COPY" => b.copy(i, false)?,
            "ADD" => b.copy(i, true)?,
            "ENV" | "LABEL" => {
                let rest = sub(&i.rest);
                let pairs: Vec<(String, String)> = if rest.contains('=') {
                    shell_words(&rest)
                        .into_iter()
                        .map(|w| {
                            let (k2, v) = w.split_once('=').unwrap_or((&w, ""));
                            (k2.to_string(), v.to_string())
                        })
                        .collect()
                } else {
                    let (k2, v) = rest.split_once(char::is_whitespace).with_context(|| format!("Dockerfile line {}: {} needs KEY=VALUE", i.line, i.cmd))?;
                    vec![(k2.to_string(), v.trim().to_string())]
                };
                if i.cmd == "ENV" {
                    changes.insert("Env".into(), json!(pairs.iter().map(|(k2, v)| format!("{k2}={v}")).collect::<Vec<_>>()));
                } else {
                    changes.insert("Labels".into(), Value::Object(pairs.into_iter().map(|(k2, v)| (k2, json!(v))).collect()));
                }
                b.config_step(i, changes)?;
            }
            "WORKDIR" => {
                let prev = b.cur(i)?.config.pointer("/config/WorkingDir").and_then(Value::as_str).unwrap_or("/").to_string();
                let w = sub(&i.rest);
                let dir = if w.starts_with('/') { w } else { format!("{}/{w}", prev.trim_end_matches('/')) };
                changes.insert("WorkingDir".into(), json!(dir));
                b.config_step(i, changes)?;
                // The directory exists from here on, as with docker.
                let mk = Instr {
                    line: i.line,
                    cmd: "WORKDIR-DIR".into(),
                    rest: dir.clone(),
                };
                make_dir(&mut b, &mk, &dir)?;
            }
            "USER" => {
                changes.insert("User".into(), json!(sub(&i.rest)));
                b.config_step(i, changes)?;
            }
            "EXPOSE" => {
                let ports: serde_json::Map<String, Value> = sub(&i.rest)
                    .split_whitespace()
                    .map(|p| (if p.contains('/') { p.to_string() } else { format!("{p}/tcp") }, json!({})))
                    .collect();
                changes.insert("ExposedPorts".into(), Value::Object(ports));
                b.config_step(i, changes)?;
            }
            "VOLUME" => {
                let vols = json_form(&i.rest).unwrap_or_else(|| sub(&i.rest).split_whitespace().map(String::from).collect());
                changes.insert("Volumes".into(), Value::Object(vols.into_iter().map(|v| (v, json!({}))).collect()));
                b.config_step(i, changes)?;
            }
            "CMD" | "ENTRYPOINT" => {
                let v = json_form(&i.rest).unwrap_or_else(|| {
                    let mut s = b.shell.clone();
                    s.push(i.rest.clone());
                    s
                });
                changes.insert(if i.cmd == "CMD" { "Cmd" } else { "Entrypoint" }.into(), json!(v));
                b.config_step(i, changes)?;
            }
            "SHELL" => {
                let v = json_form(&i.rest).with_context(|| format!("Dockerfile line {}: SHELL takes a JSON array", i.line))?;
                b.shell = v.clone();
                changes.insert("Shell".into(), json!(v));
                b.config_step(i, changes)?;
            }
            "STOPSIGNAL" => {
                changes.insert("StopSignal".into(), json!(sub(&i.rest)));
                b.config_step(i, changes)?;
            }
            "MAINTAINER" => {
                let cur = b.cur(i)?.clone();
                let text = format!("MAINTAINER {}", i.rest);
                b.step(&[&text], |bb| {
                    Ok(bb.engine.images().derive(&cur, None, &NewImage { author: Some(i.rest.clone()), created_by: format!("/bin/sh -c #(nop) {text}"), ..Default::default() })?)
                })?;
            }
            other => bail!(
                "Dockerfile line {}: {other} is not supported (FROM, ARG, RUN, COPY, ADD, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME, CMD, ENTRYPOINT, SHELL, STOPSIGNAL)",
                i.line
            ),
        }
        if let Some(c) = &b.cur {
            b.say(&format!(" ---> {}", c.config_digest.short()));
        }
    }
    let img = b.cur.clone().context("the Dockerfile produced no image")?;
    for t in &tags {
        engine.images().set_image(
            &t.to_string(),
            &img.manifest_digest,
            berth_image::oci::OCI_MANIFEST,
        )?;
    }
    if a.quiet {
        println!("{}", img.config_digest);
    } else {
        println!("Successfully built {}", img.config_digest.short());
        for t in &a.tag {
            println!("Successfully tagged {t}");
        }
    }
    Ok(())
}

/// A one-directory layer (WORKDIR's directory), cached like any step.
fn make_dir(b: &mut Builder<'_>, i: &Instr, dir: &str) -> anyhow::Result<()> {
    let cur = b.cur(i)?.clone();
    let rel = dir
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string();
    if rel.is_empty() {
        return Ok(());
    }
    b.step(&["WORKDIR-DIR", &rel], |bb| {
        let mut t = tar::Builder::new(Vec::new());
        let mut p = PathBuf::new();
        for c in Path::new(&rel).components() {
            p.push(c);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            t.append_data(&mut h, &p, &[][..])?;
        }
        let data = t.into_inner()?;
        let layer = bb.engine.images().store_layer(|w| {
            w.write_all(&data)
                .map_err(|e| berth_image::Error::io("write the layer", e))
        })?;
        let opts = NewImage {
            created_by: format!("/bin/sh -c mkdir -p {dir}"),
            ..Default::default()
        };
        Ok(bb.engine.images().derive(&cur, Some(&layer), &opts)?)
    })
}

/// Splits `A=1 B="two words"` into words, honouring double quotes.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockerfiles() {
        let i = parse("# c\nFROM busybox\nRUN echo a \\\n  && echo b\n\nENV A=1\n").unwrap();
        assert_eq!(i.len(), 3);
        assert_eq!(i[1].cmd, "RUN");
        assert_eq!(i[1].rest, "echo a  && echo b");
        assert_eq!(i[2].line, 6);
        let mut v = BTreeMap::new();
        v.insert("A".to_string(), "x".to_string());
        assert_eq!(substitute("$A/${A}-\\$A", &v), "x/x-$A");
        assert!(glob("*.log", "a.log") && !glob("*.log", "d/a.log") && glob("**/*.log", "d/a.log"));
        assert_eq!(shell_words(r#"A=1 B="two words""#), ["A=1", "B=two words"]);
    }
}
