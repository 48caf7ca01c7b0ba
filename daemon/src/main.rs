//! `edgegw`: the edge gateway daemon. See the library crate for how it is built.

fn main() -> std::process::ExitCode {
    edgegw::cli::main()
}
