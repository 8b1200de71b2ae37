use prefecto::prelude::*;

struct Adder;

impl Adder {
    #[task]
    fn add(&self, a: i64) -> i64 {
        a
    }
}

fn main() {}
