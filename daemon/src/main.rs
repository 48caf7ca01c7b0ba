//! `edgegw`: the edge gateway daemon.

fn main() -> std::process::ExitCode {
    eprintln!("edgegw: not built yet (see issue 4)");
    std::process::ExitCode::FAILURE
}
