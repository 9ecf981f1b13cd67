use galaxy_pipe::stages::StandardStages;

fn main() {
    let code =
        galaxy_pipe::cli::main_with(std::env::args_os().collect(), &StandardStages::default());
    std::process::exit(code);
}
