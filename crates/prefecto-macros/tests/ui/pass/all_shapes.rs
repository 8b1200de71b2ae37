use prefecto::prelude::*;

#[task]
fn unit() {}

#[task(name = "renamed", retries = 2, retry_delay = 1, timeout = 2.5, tags = ["a", "b"])]
fn with_options(mut x: u32) -> u32 {
    x += 1;
    x
}

#[task]
fn io_result(path: String) -> std::io::Result<usize> {
    Ok(path.len())
}

#[task]
async fn async_result(v: Vec<u8>) -> Result<usize, String> {
    Ok(v.len())
}

#[task]
fn statics(s: &'static str, c: std::borrow::Cow<'static, str>) -> String {
    format!("{s}{c}")
}

/// Documented.
#[task]
pub fn documented(x: (u8, [u16; 2])) -> Option<u8> {
    Some(x.0)
}

#[flow(name = "shapes", max_workers = 2)]
fn shapes(x: u32) -> Result<u32, TaskRunError> {
    unit()?;
    io_result("abc".into()).unwrap();
    with_options(x)
}

#[flow]
async fn async_shapes() -> usize {
    async_result(vec![1, 2]).await.unwrap()
}

fn main() {
    assert_eq!(shapes(1).unwrap(), 2);
    assert_eq!(with_options.spec().name, "renamed");
    let _ = statics;
    let _ = documented;
    let _ = async_shapes;
}
