use prefecto::prelude::*;

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task]
fn double(x: i64) -> i64 {
    x * 2
}

#[flow]
fn wrong() {
    // One argument for two parameters.
    let _ = add.map(vec![1, 2]);
    // A BatchTask given three arguments for two parameters.
    let _ = BatchTask::new(add, 2).unwrap().map(vec![1], vec![2], vec![3]);
    // Something that is no iterable at all.
    let _ = double.map(7i64);
}

fn main() {}
