//! `run`'s placeholders. An argument is text with slots: `{out}` (the stage's output folder),
//! `{<input id>}` (that input's artifact folder), `{params.NAME}`, `{seed}`, `{cores}`; `{{` and
//! `}}` are literal braces. Each argument stays one argument whatever a value holds: there is no
//! shell, so `"; rm -rf x"` reaches the program as those characters.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One piece of an argument.
#[derive(Debug, PartialEq)]
pub enum Piece<'a> {
    Text(String),
    Slot(&'a str),
}

/// The pieces of `arg`, or what is wrong with its braces.
pub fn pieces(arg: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = arg;
    while let Some(c) = rest.chars().next() {
        let after = &rest[c.len_utf8()..];
        match c {
            '{' | '}' if after.starts_with(c) => {
                text.push(c);
                rest = &after[1..];
            }
            '{' => {
                let end = after.find('}').ok_or_else(|| {
                    format!("`{arg}`: `{{` without a closing `}}` (write `{{{{` for a brace)")
                })?;
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Slot(&after[..end]));
                rest = &after[end + 1..];
            }
            '}' => {
                return Err(format!(
                    "`{arg}`: `}}` without an opening `{{` (write `}}}}` for a brace)"
                ));
            }
            _ => {
                text.push(c);
                rest = after;
            }
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// What the slots of a stage's arguments stand for when it runs.
pub struct Values<'a> {
    pub out: PathBuf,
    pub inputs: BTreeMap<String, PathBuf>,
    pub params: &'a BTreeMap<String, serde_json::Value>,
    pub seed: u64,
    pub cores: usize,
}

/// Whether `slot` names something a stage with `inputs` and `params` has; why not otherwise.
pub fn check_slot(
    slot: &str,
    inputs: &[String],
    params: &BTreeMap<String, serde_json::Value>,
) -> Result<(), String> {
    match slot {
        "out" | "seed" | "cores" => Ok(()),
        _ => match slot.strip_prefix("params.") {
            Some(name) => match params.get(name) {
                Some(serde_json::Value::Null) => Err(format!(
                    "`params.{name}` is not a finite number: NaN and infinity cannot be an argument"
                )),
                Some(v) => param_text(v).map(|_| ()).ok_or_else(|| {
                    format!("`params.{name}` is a table or an array: only a string, number or boolean can be an argument")
                }),
                None => Err(unknown(slot, "params.", params.keys())),
            },
            None if inputs.iter().any(|i| i == slot) => Ok(()),
            None => Err(format!(
                "unknown placeholder `{{{slot}}}`: use {{out}}, {{seed}}, {{cores}}, {{params.NAME}} or an input's id ({})",
                if inputs.is_empty() {
                    "this stage has no inputs".to_string()
                } else {
                    inputs.join(", ")
                }
            )),
        },
    }
}

fn unknown<'k>(slot: &str, prefix: &str, known: impl Iterator<Item = &'k String>) -> String {
    let known: Vec<String> = known.map(|k| format!("{prefix}{k}")).collect();
    format!(
        "unknown placeholder `{{{slot}}}`: `params` has {}",
        if known.is_empty() {
            "no entries".to_string()
        } else {
            known.join(", ")
        }
    )
}

/// A parameter as an argument: strings as they are, numbers and booleans as TOML writes them.
pub fn param_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `arg` with every slot filled in (slots were checked when the pipeline was loaded).
pub fn render(arg: &str, values: &Values) -> Result<String, String> {
    let mut out = String::new();
    for piece in pieces(arg)? {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Slot("out") => out.push_str(&values.out.to_string_lossy()),
            Piece::Slot("seed") => out.push_str(&values.seed.to_string()),
            Piece::Slot("cores") => out.push_str(&values.cores.to_string()),
            Piece::Slot(slot) => out.push_str(&slot_value(slot, values)?),
        }
    }
    Ok(out)
}

fn slot_value(slot: &str, values: &Values) -> Result<String, String> {
    let found = match slot.strip_prefix("params.") {
        Some(name) => values.params.get(name).and_then(param_text),
        None => values
            .inputs
            .get(slot)
            .map(|d| d.to_string_lossy().into_owned()),
    };
    found.ok_or_else(|| format!("placeholder `{{{slot}}}` has no value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_slots_and_escapes() {
        assert_eq!(
            pieces("--x={crop}/a{{b}}").unwrap(),
            [
                Piece::Text("--x=".into()),
                Piece::Slot("crop"),
                Piece::Text("/a{b}".into())
            ]
        );
        assert!(pieces("{crop").unwrap_err().contains("without a closing"));
        assert!(pieces("a}b").unwrap_err().contains("without an opening"));
    }

    #[test]
    fn slots_are_checked_against_inputs_and_params() {
        let params: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"lr": 0.001, "deep": {"a": 1}}"#).unwrap();
        let inputs = vec!["crop".to_string()];
        assert!(check_slot("crop", &inputs, &params).is_ok());
        assert!(check_slot("params.lr", &inputs, &params).is_ok());
        let e = check_slot("params.epochs", &inputs, &params).unwrap_err();
        assert!(e.contains("params.lr"), "{e}");
        assert!(check_slot("params.deep", &inputs, &params).is_err());
        let e = check_slot("train", &inputs, &params).unwrap_err();
        assert!(e.contains("crop"), "{e}");
    }

    #[test]
    fn values_stay_one_argument() {
        let params: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"evil": "; rm -rf x", "lr": 0.001}"#).unwrap();
        let values = Values {
            out: "/o".into(),
            inputs: BTreeMap::from([("crop".to_string(), PathBuf::from("/c"))]),
            params: &params,
            seed: 7,
            cores: 2,
        };
        assert_eq!(
            render("{crop}/x --lr={params.lr} {params.evil}", &values).unwrap(),
            "/c/x --lr=0.001 ; rm -rf x"
        );
        assert_eq!(render("{out}:{seed}:{cores}", &values).unwrap(), "/o:7:2");
    }
}
