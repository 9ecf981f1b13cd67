//! `run --sweep STAGE.KEY=V1,V2,...`: the grid of every combination, one run per point (sharing
//! the cache), then the compare table of those runs.

use super::output::print;
use super::pipeline::{load, open_remote, open_store, select};
use super::run::{Place, open_executor, options, run_once};
use super::{CliError, Context, PipelineArgs, RunArgs, exit};

/// Splits `V1,V2,...` at the commas outside brackets, braces and quotes, so a value may be a
/// TOML array or inline table.
fn split_values(text: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut current = String::new();
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                values.push(std::mem::take(&mut current).trim().to_string());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    values.push(current.trim().to_string());
    values
}

/// The `--set` lists of a sweep's grid, in the order the sweeps were given (last varies fastest).
fn sweep_grid(sweeps: &[String]) -> Result<Vec<Vec<String>>, CliError> {
    let mut grid: Vec<Vec<String>> = vec![Vec::new()];
    for sweep in sweeps {
        let (key, values) = sweep.split_once('=').ok_or_else(|| CliError::Sweep {
            sweep: sweep.clone(),
            problem: "expected STAGE.KEY=V1,V2,... (e.g. train.epochs=5,10)",
        })?;
        let values = split_values(values);
        if values.iter().any(String::is_empty) {
            return Err(CliError::Sweep {
                sweep: sweep.clone(),
                problem: "empty value in the list",
            });
        }
        grid = grid
            .into_iter()
            .flat_map(|point| {
                values.iter().map(move |v| {
                    let mut next = point.clone();
                    next.push(format!("{}={v}", key.trim()));
                    next
                })
            })
            .collect();
    }
    Ok(grid)
}

/// Every grid point as its own run (sharing the cache), then the compare table of those runs.
/// Every point is validated before anything runs. Locally the points run one at a time; with a
/// cluster executor all at once, so every point's stale stages are submitted together (a stage
/// shared by several points is computed once: the later points wait for its job).
pub fn run_sweep(ctx: &Context, run_args: &RunArgs) -> Result<i32, CliError> {
    let args = &run_args.pipeline;
    let grid = sweep_grid(&run_args.sweep)?;
    let mut loaded = Vec::new();
    for sets in &grid {
        let point_args = PipelineArgs {
            pipeline: args.pipeline.clone(),
            set: args.set.iter().chain(sets).cloned().collect(),
        };
        loaded.push((sets.clone(), load(ctx, &point_args)?));
    }
    let executor = open_executor(run_args, &loaded[0].1.0)?;
    let mut points = Vec::new();
    for (sets, (pipeline, graph)) in loaded {
        let opts = options(run_args, executor.as_ref());
        let selected = select(&pipeline, &graph, &opts)?;
        points.push((sets, pipeline, graph, selected, opts));
    }
    let first = &points[0].1;
    let store = open_store(ctx, Some(first))?;
    let remote = open_remote(ctx, Some(first), run_args.push)?;
    let at = Place {
        store: &store,
        remote: remote.as_ref(),
        executor: executor.as_ref(),
    };
    let n = points.len();
    let run_point = |i: usize| {
        let (sets, pipeline, graph, selected, opts) = &points[i];
        eprintln!("sweep {}/{n}: --set {}", i + 1, sets.join(" --set "));
        run_once(ctx, pipeline, graph, &at, selected, opts, false)
    };
    let results: Vec<Result<(i32, String), CliError>> = match executor.sweep_points_at_once() {
        false => (0..n).map(run_point).collect(),
        true => std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n).map(|i| scope.spawn(move || run_point(i))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a sweep point does not panic"))
                .collect()
        }),
    };
    let mut run_ids = Vec::new();
    let mut worst = exit::OK;
    for result in results {
        let (code, id) = result?;
        worst = worst.max(code);
        run_ids.push(id);
    }
    if !points[0].4.dry_run {
        if !ctx.json {
            print("\n")?;
        }
        let columns = crate::compare::run_columns(&store, &run_ids)?;
        print(&crate::compare::render(
            &columns,
            super::compare_format(ctx.json, false),
        ))?;
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_at_top_level_commas_only() {
        assert_eq!(split_values("1e-3, 3e-4"), ["1e-3", "3e-4"]);
        assert_eq!(
            split_values("[{units = 64}],[{units = 256, dropout = 0.5}]"),
            ["[{units = 64}]", "[{units = 256, dropout = 0.5}]"]
        );
        assert_eq!(split_values(r#""a,b",'c,d',e"#), [r#""a,b""#, "'c,d'", "e"]);
    }

    #[test]
    fn the_grid_is_every_combination_last_sweep_fastest() {
        let grid = sweep_grid(&["train.epochs=5,10".into(), "crop.size=32,64".into()]).unwrap();
        let points: Vec<String> = grid.iter().map(|p| p.join(" ")).collect();
        assert_eq!(
            points,
            [
                "train.epochs=5 crop.size=32",
                "train.epochs=5 crop.size=64",
                "train.epochs=10 crop.size=32",
                "train.epochs=10 crop.size=64",
            ]
        );
    }

    #[test]
    fn malformed_sweeps_are_usage_errors() {
        for bad in ["train.epochs", "train.epochs=5,,10", "train.epochs="] {
            let err = sweep_grid(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.code(), exit::USAGE, "{bad}");
            assert!(err.to_string().contains(bad), "{err} names {bad}");
        }
    }
}
