fn main() {
    std::process::exit(storage_cli::run(std::env::args_os().collect()));
}
