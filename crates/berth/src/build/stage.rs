//! One stage of a build: FROM, then each instruction as a cached step — config
//! steps, COPY and ADD (see `copy`), RUN in a container whose changes are committed.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use berth_engine::docker::config::RunConfig;
use berth_engine::docker::State;
use berth_engine::Engine;
use berth_image::commit::NewImage;
use berth_image::oci::Platform;
use berth_image::{Digest, ResolvedImage};

use super::cache::Cache;
use super::context::Ignore;
use super::dockerfile::{
    arg_decl, healthcheck, json_form, parse, shell_words, substitute, Dockerfile, Instr, Stage,
};
use super::runflags::{self, RunFlags};

/// What every stage of one build shares.
pub(super) struct Shared<'a> {
    /// The engine's state directory (each stage opens the engine itself, so stages
    /// build on threads of their own).
    pub(super) root: &'a Path,
    /// The build context.
    pub(super) context: &'a Path,
    /// Its .dockerignore.
    pub(super) ignore: &'a Ignore,
    /// No step output.
    pub(super) quiet: bool,
    /// --build-arg values.
    pub(super) given_args: &'a BTreeMap<String, String>,
    /// The Dockerfile.
    pub(super) dockerfile: &'a Dockerfile,
    /// The step cache.
    pub(super) cache: &'a Cache,
    /// Whether the cache is used.
    pub(super) use_cache: bool,
    /// `--secret` ids and their files.
    pub(super) secrets: &'a BTreeMap<String, PathBuf>,
}

/// One stage being built.
pub(super) struct Builder<'a> {
    pub(super) shared: &'a Shared<'a>,
    pub(super) engine: Engine,
    pub(super) stage: &'a Stage,
    /// The images of the stages built before (by index).
    pub(super) built: &'a HashMap<usize, Digest>,
    pub(super) cur: Option<ResolvedImage>,
    pub(super) args: BTreeMap<String, String>,
    pub(super) shell: Vec<String>,
}

impl Builder<'_> {
    pub(super) fn say(&self, s: &str) {
        if self.shared.quiet {
            return;
        }
        if self.shared.dockerfile.stages.len() > 1 {
            println!("[{}] {s}", self.stage.label());
        } else {
            println!("{s}");
        }
    }

    pub(super) fn vars(&self) -> BTreeMap<String, String> {
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

    pub(super) fn cur(&self, i: &Instr) -> anyhow::Result<&ResolvedImage> {
        self.cur
            .as_ref()
            .with_context(|| format!("Dockerfile line {}: {} before FROM", i.line, i.cmd))
    }

    pub(super) fn set(&mut self, d: &Digest) -> anyhow::Result<()> {
        self.cur = Some(self.engine.images().resolve_digest(d, &Platform::host())?);
        Ok(())
    }

    /// Looks a step up in the cache; on a miss, runs `make` and remembers its result.
    pub(super) fn step(
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
        if self.shared.use_cache {
            if let Some(d) = self
                .shared
                .cache
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
        self.shared.cache.put(key, d.to_string());
        self.set(&d)
    }

    pub(super) fn config_step(
        &mut self,
        i: &Instr,
        changes: serde_json::Map<String, Value>,
    ) -> anyhow::Result<()> {
        let text = format!("{} {}", i.cmd, i.rest);
        let cur = self.cur(i)?.clone();
        // The changes as expanded: `USER ${USER}` with another --build-arg is
        // another step.
        let expanded = Value::Object(changes.clone()).to_string();
        self.step(&[&text, &expanded], |b| {
            let opts = NewImage {
                created_by: format!("/bin/sh -c #(nop) {text}"),
                config_changes: changes,
                ..Default::default()
            };
            Ok(b.engine.images().derive(&cur, None, &opts)?)
        })
    }

    /// FROM: an image in the store, `scratch`, or an earlier stage's image.
    fn from(&mut self) -> anyhow::Result<()> {
        let i = &self.stage.from;
        let base = self.stage.base.clone();
        let d = if let Some(s) = self.shared.dockerfile.stage_before(&base, self.stage.index) {
            self.built[&s].clone()
        } else if base == "scratch" {
            let p = Platform::host();
            let config = json!({"architecture": p.arch, "os": p.os, "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []});
            self.engine
                .images()
                .store_image(&config, Vec::new(), None)?
        } else {
            let img = self
                .engine
                .images()
                .resolve_stored(&base)
                .with_context(|| format!("Dockerfile line {}: FROM {base}", i.line))?;
            img.manifest_digest
        };
        self.set(&d)
    }

    /// RUN: a container of the current image, its changes committed.
    fn run(&mut self, i: &Instr) -> anyhow::Result<()> {
        let cur = self.cur(i)?.clone();
        let (flags, command) = runflags::split(&i.rest);
        let args = match json_form(command) {
            Some(v) => v,
            None => {
                let mut v = self.shell.clone();
                v.push(command.to_string());
                v
            }
        };
        let root = self.shared.root;
        let secrets = self.shared.secrets;
        // Build args are in RUN's environment (and in its cache key), not in the image.
        let used: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let text = format!("RUN {}", i.rest);
        let key_args = used.join("\n");
        let name = format!("build-{}", &berth_engine::core::names::new_id()[..12]);
        self.step(&[&text, &key_args], |b| {
            // Held (cache locks, private caches) until the step is done.
            let flags = RunFlags::read(&flags, i.line, root, secrets)?;
            let cfg = RunConfig {
                image: cur.manifest_digest.to_string(),
                cmd: args,
                entrypoint: Some(String::new()),
                env: used.clone(),
                // RUN steps have the default network, as with docker build.
                network: flags
                    .network
                    .clone()
                    .unwrap_or_else(|| berth_net::network::DEFAULT.into()),
                mounts: flags.mounts.clone(),
                ..Default::default()
            };
            let e = &b.engine;
            let rec = e.create(cfg, Some(name.clone()))?;
            // What the runtime makes only to mount on leaves with the step (as BuildKit
            // leaves no mount point of a cache or secret in the image).
            let stubs = runflags::missing_mount_points(Path::new(&rec.rootfs), &flags.mounts);
            let result = (|| -> anyhow::Result<Digest> {
                // The step's output as the monitor sends it, until the step ends.
                let (mut child, _, output) = e.start_following(&rec)?;
                let quiet = b.shared.quiet;
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
                runflags::remove_stubs(Path::new(&rec.rootfs), &stubs);
                let opts = NewImage {
                    created_by: format!("/bin/sh -c {command}"),
                    ..Default::default()
                };
                Ok(e.commit(&rec, &opts)?)
            })();
            let _ = e.remove(&rec, true);
            result
        })
    }
}

/// Builds `stage` (the stages it uses are in `built`); returns its image.
pub(super) fn build_stage(
    shared: &Shared<'_>,
    stage: &Stage,
    built: &HashMap<usize, Digest>,
) -> anyhow::Result<Digest> {
    let mut b = Builder {
        shared,
        engine: Engine::open(shared.root)?,
        stage,
        built,
        cur: None,
        args: BTreeMap::new(),
        shell: vec!["/bin/sh".into(), "-c".into()],
    };
    let n = stage.instrs.len() + 1;
    b.say(&format!("STEP 1/{n}: FROM {}", stage.from.rest));
    b.from()?;
    if let Some(c) = &b.cur {
        b.say(&format!(" ---> {}", c.config_digest.short()));
    }
    onbuild(&mut b)?;
    for (k, i) in stage.instrs.iter().enumerate() {
        b.say(&format!("STEP {}/{n}: {} {}", k + 2, i.cmd, i.rest));
        exec(&mut b, i)?;
        if let Some(c) = &b.cur {
            b.say(&format!(" ---> {}", c.config_digest.short()));
        }
    }
    Ok(b.cur
        .context("the stage produced no image")?
        .manifest_digest)
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

/// Runs one instruction of the stage.
fn exec(b: &mut Builder<'_>, i: &Instr) -> anyhow::Result<()> {
    let vars = b.vars();
    let sub = |s: &str| substitute(s, &vars);
    let mut changes = serde_json::Map::new();
    match i.cmd.as_str() {
        "ARG" => {
            // A global ARG is seen in a stage only when declared there again.
            let (k2, def) = arg_decl(&i.rest);
            let v = b
                .shared
                .given_args
                .get(&k2)
                .cloned()
                .or(def.map(|d| sub(&d)))
                .or_else(|| b.shared.dockerfile.global_args.get(&k2).cloned())
                .unwrap_or_default();
            b.args.insert(k2, v);
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
            make_dir(b, &mk, &dir)?;
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
        "HEALTHCHECK" => {
            changes.insert("Healthcheck".into(), healthcheck(i)?);
            b.config_step(i, changes)?;
        }
        "ONBUILD" => {
            let trigger = i.rest.trim();
            let first = trigger.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            if matches!(first.as_str(), "" | "ONBUILD" | "FROM" | "MAINTAINER") {
                bail!(
                    "Dockerfile line {}: ONBUILD takes an instruction other than ONBUILD, FROM or MAINTAINER",
                    i.line
                );
            }
            let mut triggers: Vec<Value> = b
                .cur(i)?
                .config
                .pointer("/config/OnBuild")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            triggers.push(json!(trigger));
            changes.insert("OnBuild".into(), Value::Array(triggers));
            b.config_step(i, changes)?;
        }
        other => bail!(
            "Dockerfile line {}: {other} is not supported (FROM, ARG, RUN, COPY, ADD, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME, CMD, ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER)",
            i.line
        ),
    }
    Ok(())
}

/// Runs the ONBUILD triggers of the image the stage starts from, as docker does,
/// and leaves them out of the stage's image (they fire for direct children only).
fn onbuild(b: &mut Builder<'_>) -> anyhow::Result<()> {
    let triggers: Vec<String> = b
        .cur
        .as_ref()
        .and_then(|c| c.config.pointer("/config/OnBuild"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if triggers.is_empty() {
        return Ok(());
    }
    let line = b.stage.from.line;
    for t in &triggers {
        b.say(&format!("ONBUILD {t}"));
        for mut i in parse(t)? {
            i.line = line;
            exec(b, &i).with_context(|| format!("the ONBUILD trigger {t:?} of the base image"))?;
        }
    }
    let clear = Instr {
        line,
        cmd: "ONBUILD-DONE".into(),
        rest: String::new(),
    };
    let mut changes = serde_json::Map::new();
    changes.insert("OnBuild".into(), Value::Null);
    b.config_step(&clear, changes)
}
