fn main() -> std::process::ExitCode {
    prefecto::serve!()
}
