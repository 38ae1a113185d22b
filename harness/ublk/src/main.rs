fn main() {
    std::process::exit(ublk::cli::main_with_args(std::env::args_os()));
}
