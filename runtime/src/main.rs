//! `rloc`: the command line (check, fmt, emit, run, explain, bench).

fn main() {
    eprintln!("rloc: not implemented yet");
    std::process::exit(2);
}
