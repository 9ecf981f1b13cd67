//! Ensembles: averaging members, resuming, and their checks.

use super::config_errors::config_error;
use super::support::*;

/// Two small trainings that differ only by their seed (one template), averaged by an
/// `ensemble` stage that `evaluate` and `submit` read as their model.
fn ensemble_pipeline() -> String {
    let member = |id: &str, seed: u64| {
        format!(
            r#"[stages.{id}]
kind = "train"
inputs = ["crop"]
seed = {seed}
epochs = 2
batch_size = 16
conv = [{{ filters = 16, kernel = 5, pool = 2 }}, {{ filters = 32, kernel = 3, pool = 2 }}]
dense = [{{ units = 32 }}]

"#
        )
    };
    format!(
        r#"[pipeline]
name = "ens"
seed = 3

[stages.ingest]
kind = "ingest"
data_dir = "data"

[stages.crop]
kind = "crop"
inputs = ["ingest"]
size = 32

{}{}[stages.models]
kind = "ensemble"
inputs = ["train_b", "train_a"]

[stages.evaluate]
kind = "evaluate"
inputs = ["models", "crop"]

[stages.submit]
kind = "submit"
inputs = ["models", "crop"]
output = "out/submission.csv"
"#,
        member("train_a", 1),
        member("train_b", 2)
    )
}

fn ensemble_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 160, 12, 7);
    std::fs::write(dir.path().join("p.toml"), ensemble_pipeline()).unwrap();
    dir
}

#[test]
fn an_ensemble_averages_its_members_scores_each_and_gives_the_same_bytes_twice() {
    let dir = ensemble_project();
    let first = Invocation::real(dir.path(), &["run", "p.toml", "--cache-dir", "c1"])
        .succeeds()
        .json;
    assert_eq!(
        ids_with(&first, "ran"),
        [
            "ingest", "crop", "train_a", "train_b", "models", "evaluate", "submit"
        ]
    );
    let c1 = dir.path().join("c1");
    // The seeds make two different networks.
    let weights = |id: &str| std::fs::read(object_of(&first, &c1, id).join("model.bin")).unwrap();
    assert_ne!(weights("train_a"), weights("train_b"));

    // `evaluate` scores the mean and each member, and the mean is exactly what it predicts.
    let evaluate = first["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "evaluate")
        .unwrap();
    let metrics = &evaluate["metrics"];
    for key in ["rmse", "rmse_member_train_a", "rmse_member_train_b"] {
        assert!(metrics[key].as_f64().is_some(), "{key}: {metrics}");
    }
    let preds = galaxy_pipe::artifacts::read_predictions(
        &object_of(&first, &c1, "evaluate").join("predictions.parquet"),
    )
    .unwrap();
    let (mean, a, b) = (
        &preds["model"],
        &preds["member:train_a"],
        &preds["member:train_b"],
    );
    assert_eq!(mean.len(), a.len());
    for ((m, pa), pb) in mean.iter().zip(a).zip(b) {
        assert_eq!((m.0, pa.0), (pb.0, pb.0), "rows in the same galaxy order");
        for c in 0..37 {
            assert!(
                (m.1[c] - (pa.1[c] + pb.1[c]) / 2.0).abs() < 1e-6,
                "galaxy {}",
                m.0
            );
        }
    }
    let csv = std::fs::read_to_string(dir.path().join("out/submission.csv")).unwrap();
    assert_eq!(csv.lines().count(), 13);

    // A second run computes nothing; a run in a fresh cache gives the same bytes.
    let again = Invocation::real(dir.path(), &["run", "p.toml", "--cache-dir", "c1"])
        .succeeds()
        .json;
    assert!(ids_with(&again, "ran").is_empty(), "{again}");
    let _ = Invocation::real(dir.path(), &["run", "p.toml", "--cache-dir", "c2"])
        .succeeds()
        .json;
    assert!(artifact_bytes(&c1) == artifact_bytes(&dir.path().join("c2")));
}

#[test]
fn an_ensemble_run_killed_during_training_resumes_to_the_same_bytes() {
    let dir = ensemble_project();
    let _ = Invocation::real(dir.path(), &["run", "p.toml", "--cache-dir", "clean"])
        .succeeds()
        .json;

    // Killed once a training has checkpointed its first epoch, then run again.
    let cache = dir.path().join("cache");
    kill_at_the_first_checkpoint(dir.path(), &["run", "p.toml"], &cache);
    let resumed = Invocation::real(dir.path(), &["run", "p.toml"])
        .succeeds()
        .json;
    assert!(
        resumed
            .to_string()
            .contains("resumed from the checkpoint after epoch 1"),
        "{resumed}"
    );
    assert!(
        artifact_bytes(&cache) == artifact_bytes(&dir.path().join("clean")),
        "the resumed ensemble, its members and its scores are byte-identical"
    );
}

#[test]
fn ensemble_inputs_and_parameters_are_checked_before_anything_runs() {
    // (what the pipeline file says instead, what the error says)
    let cases = [
        (
            (
                r#"inputs = ["train_b", "train_a"]"#,
                r#"inputs = ["train_a"]"#,
            ),
            "stage `models` (ensemble) needs at least 2 inputs of kind `train`; it has 1",
        ),
        (
            (
                r#"inputs = ["models", "crop"]"#,
                r#"inputs = ["models", "train_a", "crop"]"#,
            ),
            "stage `evaluate` (evaluate) reads one input of kind `train`, `ensemble` or `command`",
        ),
        (
            (
                r#"inputs = ["train_b", "train_a"]"#,
                r#"inputs = ["train_b", "train_a", "crop"]"#,
            ),
            "a `ensemble` stage cannot read `crop`",
        ),
        (
            (
                "kind = \"ensemble\"\n",
                "kind = \"ensemble\"\nweights = [1, 2]\n",
            ),
            "weights",
        ),
        (("seed = 1\n", "seed = -1\n"), "seed"),
        (("seed = 1\n", "seed = 1\nema = 1.0\n"), "must be in [0, 1)"),
    ];
    let pipeline = ensemble_pipeline();
    for ((from, to), expected) in cases {
        assert!(pipeline.contains(from), "{from}");
        let text = pipeline.replacen(from, to, 1);
        let err = config_error(&[("p.toml", &text)], &[]);
        assert!(err.contains(expected), "{to}: {err}");
        assert!(err.contains("p.toml:"), "{to}: {err}");
    }
}
