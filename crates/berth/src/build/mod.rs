//! `berth build`: an image from a Dockerfile — FROM, ARG, ENV, WORKDIR, USER, EXPOSE,
//! LABEL, VOLUME, CMD, ENTRYPOINT, SHELL, STOPSIGNAL as config steps; COPY and ADD (local
//! files, directories and tar archives, and COPY --from an earlier stage or an image)
//! as layers; RUN in a container whose changes are committed. A multi-stage
//! Dockerfile builds the stages its target uses, those that do not use each other at
//! the same time. Each step's result is cached under a key of its parent image, its
//! instruction and, for COPY/ADD, the content copied.

mod cache;
mod context;
mod copy;
mod dockerfile;
mod runflags;
mod stage;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;

use berth_engine::Engine;
use berth_image::oci::Platform;
use berth_image::Digest;

use crate::Ctx;
use cache::Cache;
use context::Ignore;
use dockerfile::{parse, Dockerfile};
use stage::{build_stage, Shared};

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
    /// A secret for RUN --mount=type=secret: id=NAME,src=FILE (never in the image).
    #[arg(long)]
    secret: Vec<String>,
    /// The stage to build (by name; default: the last).
    #[arg(long)]
    target: Option<String>,
    /// Do not use the step cache.
    #[arg(long)]
    no_cache: bool,
    /// Only print the final image ID.
    #[arg(short, long)]
    quiet: bool,
    /// The build context directory.
    context: PathBuf,
}

/// `berth build`.
pub fn build(ctx: &Ctx, a: BuildArgs) -> anyhow::Result<()> {
    let context = std::fs::canonicalize(&a.context)
        .with_context(|| format!("build context {}", a.context.display()))?;
    let file = a.file.clone().unwrap_or_else(|| context.join("Dockerfile"));
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    let mut given = BTreeMap::new();
    for ba in &a.build_arg {
        let (k, v) = ba
            .split_once('=')
            .with_context(|| format!("--build-arg {ba:?}: use NAME=VALUE"))?;
        given.insert(k.to_string(), v.to_string());
    }
    let dockerfile =
        Dockerfile::read(parse(&text)?, &given).with_context(|| format!("{}", file.display()))?;
    let target = dockerfile.target(a.target.as_deref())?;
    let plan = dockerfile.plan(target)?;
    let tags: Vec<berth_image::Reference> =
        a.tag.iter().map(|t| t.parse()).collect::<Result<_, _>>()?;
    let secrets = runflags::secrets(&a.secret)?;
    let ignore = Ignore::load(&context);
    let cache = Cache::load(&ctx.root);
    let shared = Shared {
        root: &ctx.root,
        context: &context,
        ignore: &ignore,
        quiet: a.quiet,
        given_args: &given,
        dockerfile: &dockerfile,
        cache: &cache,
        use_cache: !a.no_cache,
        secrets: &secrets,
    };
    let built = build_stages(&shared, &plan)?;
    let engine = Engine::open(&ctx.root)?;
    let img = engine
        .images()
        .resolve_digest(&built[&target], &Platform::host())?;
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

/// Builds the stages of `plan`: in rounds, each round every stage whose stages are
/// built, those of one round on threads of their own. Returns each stage's image.
fn build_stages(shared: &Shared<'_>, plan: &[usize]) -> anyhow::Result<HashMap<usize, Digest>> {
    let df = shared.dockerfile;
    let mut built: HashMap<usize, Digest> = HashMap::new();
    let mut left: Vec<usize> = plan.to_vec();
    while !left.is_empty() {
        let mut ready = Vec::new();
        for &i in &left {
            if df.deps(i)?.iter().all(|d| built.contains_key(d)) {
                ready.push(i);
            }
        }
        if ready.is_empty() {
            bail!("the stages {left:?} wait on each other");
        }
        left.retain(|i| !ready.contains(i));
        let results: Vec<(usize, anyhow::Result<Digest>)> = if ready.len() == 1 {
            vec![(ready[0], build_stage(shared, &df.stages[ready[0]], &built))]
        } else {
            let done = &built;
            std::thread::scope(|s| {
                let handles: Vec<_> = ready
                    .iter()
                    .map(|&i| (i, s.spawn(move || build_stage(shared, &df.stages[i], done))))
                    .collect();
                handles
                    .into_iter()
                    .map(|(i, h)| {
                        (
                            i,
                            h.join().unwrap_or_else(|_| {
                                Err(anyhow::anyhow!("the stage's thread panicked"))
                            }),
                        )
                    })
                    .collect()
            })
        };
        for (i, r) in results {
            let d = r.with_context(|| format!("stage {}", df.stages[i].label()))?;
            built.insert(i, d);
        }
    }
    Ok(built)
}
