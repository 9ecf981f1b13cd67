//! Invalid pipelines and command lines: exit 2, a message naming file, line and the near miss.

use super::support::*;

pub(crate) fn config_error(files: &[(&str, &str)], extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut args = vec!["validate", "p.toml"];
    args.extend(extra);
    let out = bin().current_dir(dir.path()).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "config errors exit with 2");
    String::from_utf8(out.stderr).unwrap()
}

const HEAD: &str =
    "[pipeline]\nname = \"t\"\n\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"data\"\n";

#[test]
fn unknown_key_suggests_the_near_miss() {
    let err = config_error(&[("p.toml", &format!("{HEAD}valid_fractoin = 0.2\n"))], &[]);
    insta::assert_snapshot!(err);
}

#[test]
fn wrong_type_points_at_the_value() {
    let err = config_error(
        &[(
            "p.toml",
            &format!(
                "{HEAD}\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingest\"]\nsize = \"big\"\n"
            ),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unknown_kind_suggests_the_near_miss() {
    let err = config_error(
        &[(
            "p.toml",
            &format!("{HEAD}\n[stages.crop]\nkind = \"crpo\"\ninputs = [\"ingest\"]\n"),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unknown_input_is_rejected() {
    let err = config_error(
        &[(
            "p.toml",
            &format!("{HEAD}\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingset\"]\n"),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn duplicate_stage_ids_are_rejected() {
    let err = config_error(
        &[(
            "p.toml",
            &format!("{HEAD}\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"other\"\n"),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn cycles_are_printed_as_a_path() {
    let text = "[pipeline]\nname = \"t\"\n\n[stages.a]\nkind = \"ingest\"\ndata_dir = \"d\"\ninputs = [\"c\"]\n\n[stages.b]\nkind = \"crop\"\ninputs = [\"a\"]\n\n[stages.c]\nkind = \"explore\"\ninputs = [\"a\", \"b\"]\n";
    let err = config_error(&[("p.toml", text)], &[]);
    assert!(err.contains("cycle: c → a → c"), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn invalid_values_are_rejected() {
    let err = config_error(&[("p.toml", &format!("{HEAD}valid_fraction = 1.5\n"))], &[]);
    insta::assert_snapshot!(err);
}

#[test]
fn toml_syntax_errors_have_a_location() {
    let err = config_error(&[("p.toml", &format!("{HEAD}valid_fraction = \n"))], &[]);
    assert!(err.contains("p.toml:7:"), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn input_of_the_wrong_kind_is_rejected() {
    let err = config_error(
        &[(
            "p.toml",
            &format!("{HEAD}\n[stages.train]\nkind = \"train\"\ninputs = [\"ingest\"]\n"),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn bad_overrides_name_the_argument() {
    let err = config_error(&[("p.toml", HEAD)], &["--set", "ingset.valid_fraction=0.2"]);
    insta::assert_snapshot!(err);
    let err = config_error(
        &[("p.toml", HEAD)],
        &["--set", "ingest.valid_fraction=lots"],
    );
    assert!(err.contains("--set:1:"), "{err}");
}

#[test]
fn errors_in_an_extended_file_name_that_file() {
    let child = "extends = \"base.toml\"\n[stages.ingest]\nvalid_fraction = 0.3\n";
    let err = config_error(
        &[
            ("p.toml", child),
            ("base.toml", &format!("{HEAD}tree_tolerence = 0.1\n")),
        ],
        &[],
    );
    assert!(err.contains("base.toml:7:1"), "{err}");
    let err = config_error(&[("p.toml", "extends = \"missing.toml\"\n")], &[]);
    assert!(err.contains("cannot read extended pipeline"), "{err}");
}

#[test]
fn json_errors_carry_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), "[pipeline]\nname = 3\n").unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["validate", "p.toml", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 2);
}
