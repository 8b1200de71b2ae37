use prefecto::prelude::*;

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[flow]
fn wrong() {
    let _ = add.map(vec![1, 2], vec!["2", "3"]);
}

fn main() {}
