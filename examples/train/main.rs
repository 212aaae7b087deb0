//! RL training of a small transformer policy with any `.rlo` objective.

fn main() {
    eprintln!("train: not implemented yet");
}
