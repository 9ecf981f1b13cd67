//! A model artifact holds one network (`model.json` + `model.bin`, written by `train`) or several
//! (`ensemble.json` + `members/<n>/`, written by `ensemble`), whose predictions are averaged.
//! Inference reads either through [`members`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::net::Architecture;
use crate::labels::Labels;

/// The file that marks an ensemble and lists its members.
pub const MANIFEST: &str = "ensemble.json";
/// The files of one network.
const NETWORK_FILES: [&str; 2] = ["model.json", "model.bin"];

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    members: Vec<Member>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Member {
    /// The `train` stage it came from.
    stage: String,
    /// Its folder, relative to the ensemble's.
    dir: String,
}

/// One network of a model artifact: its name (the training stage's id, or `model` for a single
/// network) and its folder.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkDir {
    pub name: String,
    pub dir: PathBuf,
}

/// The networks of the model artifact in `dir`, in the ensemble's order.
pub fn members(dir: &Path) -> Result<Vec<NetworkDir>, ModelError> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        return Ok(vec![NetworkDir {
            name: "model".into(),
            dir: dir.to_path_buf(),
        }]);
    }
    let manifest: Manifest = read_json(&path)?;
    manifest
        .members
        .into_iter()
        .map(|m| {
            let safe = Path::new(&m.dir)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !safe {
                return Err(ModelError::Record {
                    what: path.display().to_string(),
                    message: format!("member folder `{}` leaves the ensemble", m.dir),
                });
            }
            Ok(NetworkDir {
                name: m.stage,
                dir: dir.join(m.dir),
            })
        })
        .collect()
}

/// The architecture stored in a network's folder.
pub fn architecture(dir: &Path) -> Result<Architecture, ModelError> {
    read_json(&dir.join("model.json"))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let bytes = std::fs::read(path).map_err(ModelError::io("reading", path))?;
    serde_json::from_slice(&bytes).map_err(ModelError::record(path.display().to_string()))
}

/// Write an ensemble of the trained networks `networks` (stage id, folder) into `out`: each
/// network's files copied into `members/<n>/`, and the manifest. All must read the same input
/// size (they are applied to the same crops).
pub fn write(out: &Path, networks: &[NetworkDir]) -> Result<Vec<Architecture>, ModelError> {
    let archs: Vec<Architecture> = networks
        .iter()
        .map(|n| architecture(&n.dir))
        .collect::<Result<_, _>>()?;
    if let Some((k, a)) = archs
        .iter()
        .enumerate()
        .find(|(_, a)| a.input_size != archs[0].input_size)
    {
        return Err(ModelError::Record {
            what: "ensemble".into(),
            message: format!(
                "`{}` was trained on {}-pixel crops but `{}` on {}-pixel crops; an ensemble averages networks that read the same crops",
                networks[0].name, archs[0].input_size, networks[k].name, a.input_size
            ),
        });
    }
    let mut manifest = Manifest {
        members: Vec::new(),
    };
    for (n, network) in networks.iter().enumerate() {
        let rel = format!("members/{n}");
        copy_network(&network.dir, &out.join(&rel))?;
        manifest.members.push(Member {
            stage: network.name.clone(),
            dir: rel,
        });
    }
    let path = out.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    std::fs::write(&path, json).map_err(ModelError::io("writing", &path))?;
    Ok(archs)
}

fn copy_network(from: &Path, to: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(to).map_err(ModelError::io("creating", to))?;
    for file in NETWORK_FILES {
        std::fs::copy(from.join(file), to.join(file))
            .map_err(ModelError::io("copying", from.join(file)))?;
    }
    Ok(())
}

/// The element-wise mean of the members' predictions (summed in member order: deterministic).
pub fn mean<P: AsRef<[Labels]>>(members: &[P]) -> Vec<Labels> {
    let Some(first) = members.first().map(AsRef::as_ref) else {
        return Vec::new();
    };
    if members.len() == 1 {
        return first.to_vec(); // one network: its own predictions, bit for bit
    }
    let n = members.len() as f32;
    (0..first.len())
        .map(|i| {
            let mut sum = [0f32; crate::labels::N_CLASSES];
            for m in members {
                for (s, v) in sum.iter_mut().zip(&m.as_ref()[i]) {
                    *s += v;
                }
            }
            sum.map(|s| s / n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_train_folder_is_one_network_named_model() {
        let dir = tempfile::tempdir().unwrap();
        let got = members(dir.path()).unwrap();
        assert_eq!(
            got,
            vec![NetworkDir {
                name: "model".into(),
                dir: dir.path().to_path_buf()
            }]
        );
    }

    #[test]
    fn a_member_folder_outside_the_ensemble_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MANIFEST),
            r#"{"members":[{"stage":"a","dir":"../../etc"}]}"#,
        )
        .unwrap();
        let err = members(dir.path()).unwrap_err().to_string();
        assert!(err.contains("leaves the ensemble"), "{err}");
    }

    fn network(root: &Path, name: &str, input_size: usize) -> NetworkDir {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let arch = Architecture {
            input_size,
            conv: crate::model::recipe::TrainParams::default_conv(),
            dense: Vec::new(),
            activation: crate::model::recipe::Activation::Relu,
            output: crate::model::recipe::OutputHead::Sigmoid,
        };
        std::fs::write(dir.join("model.json"), serde_json::to_vec(&arch).unwrap()).unwrap();
        std::fs::write(dir.join("model.bin"), name.as_bytes()).unwrap();
        NetworkDir {
            name: name.into(),
            dir,
        }
    }

    #[test]
    fn members_are_copied_in_order_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let nets = [network(root.path(), "a", 64), network(root.path(), "b", 64)];
        let out = root.path().join("out");
        write(&out, &nets).unwrap();
        let got = members(&out).unwrap();
        let names: Vec<&str> = got.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(std::fs::read(got[1].dir.join("model.bin")).unwrap(), b"b");
    }

    #[test]
    fn members_trained_on_different_crop_sizes_are_refused_by_name() {
        let root = tempfile::tempdir().unwrap();
        let nets = [network(root.path(), "a", 64), network(root.path(), "b", 69)];
        let err = write(&root.path().join("out"), &nets)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`a` was trained on 64-pixel crops but `b` on 69-pixel"),
            "{err}"
        );
    }

    #[test]
    fn the_mean_is_per_class_over_members() {
        let mut a = [0f32; crate::labels::N_CLASSES];
        let mut b = a;
        a[0] = 0.2;
        b[0] = 0.6;
        b[36] = 1.0;
        let got = mean(&[vec![a], vec![b]]);
        assert!((got[0][0] - 0.4).abs() < 1e-7);
        assert!((got[0][36] - 0.5).abs() < 1e-7);
    }
}
