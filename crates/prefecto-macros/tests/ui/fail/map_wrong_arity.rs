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
    let _ = add.map((vec![1, 2],));
    // A one-parameter task given its iterable bare, not in a tuple.
    let _ = double.map(vec![1, 2]);
    // Something that is no iterable at all.
    let _ = double.map((7i64,));
}

fn main() {}
