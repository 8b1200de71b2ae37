use prefecto::prelude::*;

fn key(x: &u32) -> u32 {
    *x
}

#[task(cache_key = key)]
fn cached(x: u32) -> u32 {
    x
}

#[task(cache_key = "key", persist_result = true)]
fn quoted(x: u32) -> u32 {
    x
}

fn main() {}
