use prefecto::prelude::*;

#[task(timeout = "10s")]
fn slow(a: i64) -> i64 {
    a
}

#[task(tags = "db")]
fn tagged(a: i64) -> i64 {
    a
}

#[task(timeout = 0)]
fn instant(a: i64) -> i64 {
    a
}

fn main() {}
