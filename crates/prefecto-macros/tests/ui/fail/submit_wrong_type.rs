use prefecto::prelude::*;

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task]
fn shout(s: String) -> String {
    s.to_uppercase()
}

#[flow]
fn wrong() {
    // A string for an `i64` parameter.
    let _ = add.submit("1", 2);
    // A future of a `String` run for an `i64` parameter.
    let _ = add.submit(shout.submit(String::from("x")), 2);
}

fn main() {}
