//! A Dockerfile read: instructions (continuation lines joined, comments dropped),
//! variable substitution, and the stages of a multi-stage build with what each
//! depends on.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};

/// One Dockerfile instruction.
#[derive(Clone, Debug)]
pub(super) struct Instr {
    /// The line it starts on.
    pub(super) line: usize,
    /// The instruction, upper-cased.
    pub(super) cmd: String,
    /// The rest of the line.
    pub(super) rest: String,
}

/// Splits a Dockerfile into instructions (continuation lines joined, comments dropped).
pub(super) fn parse(text: &str) -> anyhow::Result<Vec<Instr>> {
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
pub(super) fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
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
pub(super) fn json_form(s: &str) -> Option<Vec<String>> {
    s.trim()
        .starts_with('[')
        .then(|| serde_json::from_str(s.trim()).ok())
        .flatten()
}

/// Splits `A=1 B="two words"` into words, honouring double quotes.
pub(super) fn shell_words(s: &str) -> Vec<String> {
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

/// One stage: a FROM and the instructions up to the next FROM.
#[derive(Clone, Debug)]
pub(super) struct Stage {
    /// Its position, from 0.
    pub(super) index: usize,
    /// Its name (`FROM ... AS name`), lower-cased as docker compares them.
    pub(super) name: Option<String>,
    /// What it starts from: an image, `scratch`, or an earlier stage's name or index.
    pub(super) base: String,
    /// The FROM instruction.
    pub(super) from: Instr,
    /// The instructions after FROM.
    pub(super) instrs: Vec<Instr>,
}

impl Stage {
    /// How output and errors name it: its name, or its index.
    pub(super) fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// A Dockerfile as stages.
#[derive(Debug)]
pub(super) struct Dockerfile {
    /// ARGs before the first FROM: usable in FROM lines, and in a stage that
    /// declares them again without a value.
    pub(super) global_args: BTreeMap<String, String>,
    /// The stages, in order.
    pub(super) stages: Vec<Stage>,
}

/// Whether `s` is a valid stage name (docker's: a letter, then letters, digits,
/// `-`, `_` and `.`).
fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '-' | '_' | '.'))
}

/// An ARG's name and its default (None: declared without one).
pub(super) fn arg_decl(rest: &str) -> (String, Option<String>) {
    match rest.split_once('=') {
        Some((k, v)) => (
            k.trim().to_string(),
            Some(v.trim().trim_matches('"').to_string()),
        ),
        None => (rest.trim().to_string(), None),
    }
}

impl Dockerfile {
    /// Splits instructions into stages; `given` are the --build-arg values.
    pub(super) fn read(
        instrs: Vec<Instr>,
        given: &BTreeMap<String, String>,
    ) -> anyhow::Result<Dockerfile> {
        let mut global_args = BTreeMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        for i in instrs {
            if i.cmd == "FROM" {
                let rest = substitute(&i.rest, &global_args);
                let mut words: Vec<&str> = rest.split_whitespace().collect();
                words.retain(|w| !w.starts_with("--platform="));
                let (base, name) = match words.as_slice() {
                    [b] => (b.to_string(), None),
                    [b, as_, n] if as_.eq_ignore_ascii_case("as") => {
                        (b.to_string(), Some(n.to_ascii_lowercase()))
                    }
                    _ => bail!(
                        "Dockerfile line {}: FROM takes an image and optionally AS NAME (FROM IMAGE [AS NAME])",
                        i.line
                    ),
                };
                if let Some(n) = &name {
                    if !valid_name(n) {
                        bail!("Dockerfile line {}: stage name {n:?} is not valid (a letter, then letters, digits, '-', '_' or '.')", i.line);
                    }
                    if stages.iter().any(|s| s.name.as_deref() == Some(n.as_str())) {
                        bail!("Dockerfile line {}: a stage named {n:?} comes earlier (stage names must be unique)", i.line);
                    }
                    if base.eq_ignore_ascii_case(n) {
                        bail!("Dockerfile line {}: stage {n:?} is based on itself (circular dependency): give the stage or its base another name", i.line);
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    name,
                    base,
                    from: i,
                    instrs: Vec::new(),
                });
                continue;
            }
            match stages.last_mut() {
                Some(s) => s.instrs.push(i),
                None if i.cmd == "ARG" => {
                    let (k, def) = arg_decl(&i.rest);
                    // A default may use the global ARGs above it (ARG V=1 / ARG IMG=x:$V).
                    let v = given
                        .get(&k)
                        .cloned()
                        .or_else(|| def.map(|d| substitute(&d, &global_args)))
                        .unwrap_or_default();
                    global_args.insert(k, v);
                }
                None => bail!(
                    "Dockerfile line {}: {} before FROM (only ARG may come before the first FROM)",
                    i.line,
                    i.cmd
                ),
            }
        }
        if stages.is_empty() {
            bail!("no FROM instruction");
        }
        Ok(Dockerfile {
            global_args,
            stages,
        })
    }

    /// The stage `what` names (a name, or an index) among those before stage `before`.
    pub(super) fn stage_before(&self, what: &str, before: usize) -> Option<usize> {
        let what = what.to_ascii_lowercase();
        self.stages[..before]
            .iter()
            .find(|s| s.name.as_deref() == Some(what.as_str()) || s.index.to_string() == what)
            .map(|s| s.index)
    }

    /// The stage `--target` names (the last one when None).
    pub(super) fn target(&self, name: Option<&str>) -> anyhow::Result<usize> {
        match name {
            None => Ok(self.stages.len() - 1),
            Some(n) => self.stage_before(n, self.stages.len()).with_context(|| {
                let names: Vec<String> = self.stages.iter().map(Stage::label).collect();
                format!(
                    "--target {n:?}: no such stage (the stages are {})",
                    names.join(", ")
                )
            }),
        }
    }

    /// The earlier stages stage `i` uses: its base, and every COPY --from naming one.
    /// A --from that names no earlier stage names an image.
    pub(super) fn deps(&self, i: usize) -> anyhow::Result<Vec<usize>> {
        let s = &self.stages[i];
        let mut out = Vec::new();
        if let Some(d) = self.stage_before(&s.base, i) {
            out.push(d);
        }
        for ins in s
            .instrs
            .iter()
            .filter(|x| x.cmd == "COPY" || x.cmd == "ADD")
        {
            if let Some(from) = copy_from(&ins.rest) {
                let from = substitute(&from, &self.global_args);
                if from.eq_ignore_ascii_case(&s.label())
                    || s.name.is_none() && from == i.to_string()
                {
                    bail!(
                        "Dockerfile line {}: {} --from={from} names the stage it is in: copy from an earlier stage or an image",
                        ins.line,
                        ins.cmd
                    );
                }
                if let Some(d) = self.stage_before(&from, i) {
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The stages to build for `target`, each after every stage it uses.
    pub(super) fn plan(&self, target: usize) -> anyhow::Result<Vec<usize>> {
        let mut needed = vec![false; self.stages.len()];
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if std::mem::replace(&mut needed[i], true) {
                continue;
            }
            todo.extend(self.deps(i)?);
        }
        // Dependencies are always earlier stages: index order is a valid order.
        Ok((0..self.stages.len()).filter(|i| needed[*i]).collect())
    }
}

/// HEALTHCHECK as the image config holds it (docker's Healthcheck: the test, and
/// durations in nanoseconds).
pub(super) fn healthcheck(i: &Instr) -> anyhow::Result<serde_json::Value> {
    let rest = i.rest.trim();
    if rest.eq_ignore_ascii_case("NONE") {
        return Ok(serde_json::json!({"Test": ["NONE"]}));
    }
    let mut hc = serde_json::Map::new();
    let mut left = rest;
    while let Some(flag) = left
        .split_whitespace()
        .next()
        .filter(|w| w.starts_with("--"))
    {
        left = left[left.find(flag).unwrap_or(0) + flag.len()..].trim_start();
        let (name, value) = flag[2..].split_once('=').unwrap_or((&flag[2..], ""));
        let key = match name {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: i64 = value.parse().ok().filter(|n| *n >= 0).with_context(|| {
                    format!("Dockerfile line {}: HEALTHCHECK --retries={value:?}: a count is needed", i.line)
                })?;
                hc.insert("Retries".into(), serde_json::json!(n));
                continue;
            }
            other => bail!(
                "Dockerfile line {}: HEALTHCHECK --{other} is not an option (--interval, --timeout, --start-period, --start-interval, --retries)",
                i.line
            ),
        };
        let ns = duration_ns(value).with_context(|| {
            format!("Dockerfile line {}: HEALTHCHECK --{name}={value:?}: a duration such as 30s or 1m30s is needed", i.line)
        })?;
        hc.insert(key.into(), serde_json::json!(ns));
    }
    let (kw, cmd) = left.split_once(char::is_whitespace).unwrap_or((left, ""));
    if !kw.eq_ignore_ascii_case("CMD") || cmd.trim().is_empty() {
        bail!(
            "Dockerfile line {}: HEALTHCHECK takes NONE, or [OPTIONS] CMD COMMAND",
            i.line
        );
    }
    let test: Vec<String> = match json_form(cmd) {
        Some(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
        None => vec!["CMD-SHELL".into(), cmd.trim().to_string()],
    };
    hc.insert("Test".into(), serde_json::json!(test));
    Ok(serde_json::Value::Object(hc))
}

/// A Go duration ("30s", "1m30s", "500ms", "2h") in nanoseconds.
fn duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

/// The value of a COPY or ADD `--from=` flag, if it has one.
pub(super) fn copy_from(rest: &str) -> Option<String> {
    rest.split_whitespace()
        .take_while(|w| w.starts_with("--"))
        .find_map(|w| w.strip_prefix("--from=").map(str::to_string))
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
        assert_eq!(shell_words(r#"A=1 B="two words""#), ["A=1", "B=two words"]);
    }

    fn read(text: &str) -> anyhow::Result<Dockerfile> {
        Dockerfile::read(parse(text).unwrap(), &BTreeMap::new())
    }

    #[test]
    fn stages_their_dependencies_and_the_plan_for_a_target() {
        let d = read(
            "ARG BASE=busybox\nFROM $BASE AS build\nRUN make\nFROM busybox AS docs\nRUN doc\n\
             FROM scratch\nCOPY --from=build /out /bin/app\nCOPY --from=alpine /etc/os-release /\n",
        )
        .unwrap();
        assert_eq!(d.stages.len(), 3);
        assert_eq!(d.stages[0].base, "busybox");
        assert_eq!(d.stages[2].label(), "2");
        // The last stage uses `build` (alpine is an image); `docs` is not needed.
        assert_eq!(d.deps(2).unwrap(), vec![0]);
        assert_eq!(d.plan(2).unwrap(), vec![0, 2]);
        assert_eq!(d.plan(d.target(Some("docs")).unwrap()).unwrap(), vec![1]);
        let e = d.target(Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("no such stage") && e.contains("build, docs, 2"),
            "{e}"
        );
        // By index, and a FROM of an earlier stage.
        let d = read("FROM busybox\nRUN a\nFROM 0\nCOPY --from=0 /a /b\n").unwrap();
        assert_eq!(d.plan(1).unwrap(), vec![0, 1]);
    }

    #[test]
    fn healthchecks_as_docker_stores_them() {
        let hc = |rest: &str| {
            healthcheck(&Instr {
                line: 3,
                cmd: "HEALTHCHECK".into(),
                rest: rest.into(),
            })
        };
        assert_eq!(hc("NONE").unwrap(), serde_json::json!({"Test": ["NONE"]}));
        assert_eq!(
            hc("--interval=1m30s --timeout=500ms --retries=3 CMD wget -q localhost || exit 1")
                .unwrap(),
            serde_json::json!({"Interval": 90_000_000_000i64, "Timeout": 500_000_000,
                "Retries": 3, "Test": ["CMD-SHELL", "wget -q localhost || exit 1"]})
        );
        assert_eq!(
            hc(r#"CMD ["/bin/check", "-v"]"#).unwrap()["Test"],
            serde_json::json!(["CMD", "/bin/check", "-v"])
        );
        for (bad, why) in [
            ("--interval=soon CMD x", "a duration"),
            ("--every=1s CMD x", "not an option"),
            ("RUN x", "NONE, or [OPTIONS] CMD"),
            ("--retries=-1 CMD x", "a count"),
        ] {
            let e = format!("{:#}", hc(bad).unwrap_err());
            assert!(e.contains(why) && e.contains("line 3"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_stages_are_refused_with_the_line() {
        let e = |t: &str| read(t).unwrap_err().to_string();
        assert!(e("FROM b AS b\n").contains("based on itself"));
        assert!(e("FROM a AS x\nFROM b AS X\n").contains("must be unique"));
        assert!(e("FROM a AS 1x\n").contains("not valid"));
        assert!(e("RUN x\nFROM a\n").contains("RUN before FROM"));
        assert!(e("ARG A\n").contains("no FROM"));
        let d = read("FROM a AS x\nCOPY --from=x /a /b\n").unwrap();
        let e = d.deps(0).unwrap_err().to_string();
        assert!(
            e.contains("names the stage it is in") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn global_arg_defaults_see_the_global_args_above_them() {
        let d = |text: &str, given: &[(&str, &str)]| {
            let given = given
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Dockerfile::read(parse(text).unwrap(), &given).unwrap()
        };
        let f = d("ARG V=1.36\nARG IMG=busybox:${V}\nFROM $IMG\n", &[]);
        assert_eq!(f.global_args["IMG"], "busybox:1.36");
        assert_eq!(f.stages[0].base, "busybox:1.36");
        let f = d(
            "ARG V=1.36\nARG IMG=busybox:${V}\nFROM $IMG\n",
            &[("V", "2")],
        );
        assert_eq!(f.stages[0].base, "busybox:2");
    }
}
