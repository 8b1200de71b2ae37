use prefecto::prelude::*;

#[flow]
fn run_for<T>(x: T) -> T {
    x
}

#[flow(workers = 2)]
fn typo() {}

fn main() {}
