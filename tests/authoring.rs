//! What users write and read: pipeline files (stage templates, `like`), the JSON Schema that
//! editors apply through the `#:schema` header (checked with taplo, the engine of VS Code's Even
//! Better TOML, when it is installed: `.ci/run` installs it from PyPI; without it the schema test
//! skips loudly, and `GALAXY_PIPE_REQUIRE_TAPLO=1` turns that into a failure), and the README's
//! code snippet and layout held against the code.

mod support;

use support::*;

#[test]
fn child_entry() {
    child_main();
}

/// `train2` written with `like` and written out in full: the same key (a run of one leaves the
/// other's training fresh), and `--set` still reaches each stage on its own.
#[test]
fn a_stage_like_another_has_the_key_of_the_table_written_out() {
    let p = Project::new(6, 0);
    let written_out = format!(
        "{PIPELINE}\n[stages.train2]\nkind = \"train\"\ninputs = [\"crop\"]\nepochs = 3\nlearning_rate = 0.002\n"
    );
    let templated =
        format!("{PIPELINE}\n[stages.train2]\nlike = \"train\"\nlearning_rate = 0.002\n");
    p.write("full.toml", &written_out);
    p.write("like.toml", &templated);
    let (code, v) = p.run_json(&["run", "full.toml"]);
    assert_eq!(code, 0, "{v}");
    let (_, s) = p.run_json(&["status", "like.toml"]);
    let states = stage_field(&s, "state");
    assert!(states.iter().all(|(_, state)| state == "fresh"), "{s}");
    // An override of the template does not reach the copy, and the other way round.
    let (_, s) = p.run_json(&["status", "like.toml", "--set", "train.epochs=2"]);
    let states = stage_field(&s, "state");
    assert!(
        states.contains(&("train2".to_string(), "fresh".to_string())),
        "{s}"
    );
    assert!(
        states.contains(&("train".to_string(), "stale".to_string())),
        "{s}"
    );
}

/// A `like` naming no stage, or a chain of templates that comes back to itself: config errors
/// (exit 2) at the `like` value, with the near miss or the cycle spelled out.
#[test]
fn a_missing_or_cyclic_like_is_a_config_error_at_its_line() {
    let p = Project::new(2, 0);
    let cases = [
        (
            "[stages.train2]\nlike = \"trian\"\n",
            "`stages.train2.like`: there is no stage `trian`",
            "did you mean `train`?",
        ),
        (
            "[stages.a]\nlike = \"b\"\n[stages.b]\nlike = \"a\"\n",
            "`like` cycle: a → b → a",
            "p.toml:",
        ),
        (
            "[stages.train2]\nlike = 3\n",
            "`stages.train2.like` must be a string",
            "p.toml:",
        ),
    ];
    for (extra, message, also) in cases {
        p.write("p.toml", &format!("{PIPELINE}\n{extra}"));
        let out = p.run(&["validate", "p.toml"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(message), "{extra}: {err}");
        assert!(err.contains(also), "{extra}: {err}");
    }
}

/// taplo, if present: `Ok(true)` when it accepts `file` under the committed schema.
fn taplo_accepts(file: &std::path::Path) -> Option<(bool, String)> {
    let schema = repo_root().join("schemas/pipeline.schema.json");
    let out = std::process::Command::new("taplo")
        .args(["check", "--schema", &format!("file://{}", schema.display())])
        .arg(file)
        .output()
        .ok()?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    Some((out.status.success(), said))
}

/// The schema accepts what galaxy-pipe accepts: every shipped pipeline (5 of 6 of them extend
/// another with override tables that name no kind) and the test pipelines pass `taplo check`;
/// files galaxy-pipe rejects are rejected by both.
#[test]
fn the_schema_accepts_exactly_what_galaxy_pipe_accepts_in_taplo() {
    let probe = repo_root().join("pipelines/full.toml");
    if taplo_accepts(&probe).is_none() {
        assert!(
            std::env::var_os("GALAXY_PIPE_REQUIRE_TAPLO").is_none(),
            "GALAXY_PIPE_REQUIRE_TAPLO is set but `taplo` is not on PATH"
        );
        eprintln!(
            "\n!!! SKIPPED: `taplo` is not installed (pip install taplo; .ci/run does) !!!\n"
        );
        return;
    }
    let shipped = std::fs::read_dir(repo_root().join("pipelines")).unwrap();
    for file in shipped
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let (ok, said) = taplo_accepts(&file).unwrap();
        assert!(ok, "{}: {said}", file.display());
    }
    let p = Project::new(2, 0);
    let valid = [
        ("base.toml", PIPELINE.to_string()),
        (
            "over.toml",
            "extends = \"base.toml\"\n[pipeline]\nseed = 3\n[stages.train]\nepochs = 5\n[stages.crop]\nsize = 48\n"
                .into(),
        ),
        (
            "like.toml",
            format!("{PIPELINE}\n[stages.train2]\nlike = \"train\"\nepochs = 1\n"),
        ),
    ];
    let invalid = [
        ("unknown.toml", PIPELINE.replace("epochs = 3", "epoch = 3")),
        (
            "no-kind.toml",
            format!("{PIPELINE}\n[stages.orphan]\nepochs = 1\n"),
        ),
        (
            "bad-override.toml",
            "extends = \"base.toml\"\n[stages.train]\nepoch = 5\n".into(),
        ),
        ("bad-setting.toml", PIPELINE.replace("seed = 7", "sead = 7")),
        ("no-name.toml", PIPELINE.replace("name = \"test\"\n", "")),
        (
            "wrong-kind-key.toml",
            PIPELINE.replace("size = 32", "size = 32\nepochs = 2"),
        ),
    ];
    for (name, text) in valid.iter().chain(&invalid) {
        p.write(name, text);
    }
    for (name, _) in &valid {
        let (ok, said) = taplo_accepts(&p.path().join(name)).unwrap();
        assert!(ok, "{name}: {said}");
        let out = p.run(&["validate", name]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (name, _) in &invalid {
        let (ok, _) = taplo_accepts(&p.path().join(name)).unwrap();
        assert!(!ok, "{name}: taplo accepted it");
        let out = p.run(&["validate", name]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: galaxy-pipe accepted it"
        );
    }
}

// ------------------------------------------------------------------ the README, as code

/// A line of Rust without its trailing `//` comment and surrounding space.
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or("").trim()
}

/// The README's "Adding a stage kind" snippet is the toy kind that compiles: each of its code
/// lines appears, in order, in `tests/support/tally.rs` (which this test binary builds), except
/// the `// …` lines that stand for a body it leaves out.
#[test]
fn the_readmes_stage_kind_snippet_is_the_toy_kind_that_compiles() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split("## Adding a stage kind")
        .nth(1)
        .expect("the section");
    let snippet = section
        .split("```rust")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a rust block");
    let tally = std::fs::read_to_string(repo_root().join("tests/support/tally.rs")).unwrap();
    let source: Vec<&str> = tally.lines().map(code_of).collect();
    let mut at = 0;
    for line in snippet.lines().map(code_of).filter(|l| !l.is_empty()) {
        let found = source[at..].iter().position(|s| *s == line);
        let Some(offset) = found else {
            panic!(
                "README snippet line `{line}` is not in tests/support/tally.rs (after line {at})"
            );
        };
        at += offset + 1;
    }
}

/// The README's layout names what `src/` holds and every test binary: every path it names exists,
/// and every entry of `src/` and of `tests/` is named.
#[test]
fn the_readmes_layout_matches_src() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let layout = readme
        .split("## Layout")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let named: Vec<&str> = layout
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(' || c == ')')
        .filter(|w| w.starts_with("src/") || w.starts_with("tests/"))
        .collect();
    for path in &named {
        let path = path.trim_end_matches(['.', ':']);
        assert!(
            repo_root().join(path).exists(),
            "README layout names `{path}`, which does not exist"
        );
    }
    for entry in std::fs::read_dir(repo_root().join("src"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "lib.rs" || name == "main.rs" {
            continue;
        }
        let spelled = if entry.path().is_dir() {
            format!("src/{name}/")
        } else {
            format!("src/{name}")
        };
        assert!(
            named.iter().any(|n| n.starts_with(&spelled)),
            "README layout does not name `{spelled}`"
        );
    }
    // Every test binary too: a file `tests/x.rs` or a folder `tests/x/` with its `main.rs`.
    for entry in std::fs::read_dir(repo_root().join("tests"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let spelled = if entry.path().join("main.rs").exists() {
            format!("tests/{name}/")
        } else if name.ends_with(".rs") {
            format!("tests/{name}")
        } else {
            continue;
        };
        assert!(
            named.iter().any(|n| n.starts_with(&spelled)),
            "README layout does not name the test binary `{spelled}`"
        );
    }
}

/// `[pipeline]` is typed like a stage: an unknown key is named with its near miss, a bad value
/// at its line, and the seed defaults to 42 when the file names none.
#[test]
fn pipeline_settings_are_checked_like_stage_parameters() {
    let p = Project::new(2, 0);
    let cases = [
        (
            "seed = 7",
            "sead = 7",
            "unknown key `sead` for `[pipeline]`",
            "did you mean `seed`?",
        ),
        ("seed = 7", "seed = -7", "`pipeline.seed`", "p.toml:"),
        (
            "seed = 7",
            "seed = 7\nexecutor = \"slurn\"",
            "unknown variant `slurn`, expected `local` or `slurm`",
            "p.toml:",
        ),
        (
            "name = \"test\"",
            "name = \" \"",
            "`pipeline.name` must not be blank",
            "p.toml:",
        ),
    ];
    for (from, to, message, also) in cases {
        p.write("p.toml", &PIPELINE.replace(from, to));
        let out = p.run(&["validate", "p.toml"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to}: {err}");
        assert!(err.contains(message) && err.contains(also), "{to}: {err}");
    }
    let unseeded = PIPELINE.replace("seed = 7\n", "");
    p.write("p.toml", &unseeded);
    let pipeline = galaxy_pipe::config::load(&p.path().join("p.toml"), &[], &test_registry());
    assert_eq!(pipeline.unwrap().seed, galaxy_pipe::config::DEFAULT_SEED);
    assert_eq!(galaxy_pipe::config::DEFAULT_SEED, 42);
}
