use prefecto::prelude::*;

#[task(retry = 3)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn main() {}
