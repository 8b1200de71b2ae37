use prefecto::prelude::*;

struct Handle;

#[task(retries = 2)]
fn use_handle(h: Handle) -> u8 {
    let _ = h;
    1
}

fn main() {}
