//! The `#[task]` and `#[flow]` attributes of [prefecto](https://docs.rs/prefecto).
//! Use them through `prefecto::prelude::*`; their docs are there.

mod flow;
mod options;
mod served;
mod signature;
mod task;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use syn::Error;

/// Turns a function into a task. See `prefecto::task::Task`.
///
/// Options:
/// - `name = "..."`: the task's name (default: the function's);
/// - `retries = N`, `retry_delay = seconds`: run a failed body again;
/// - `timeout = seconds`: a run that takes longer ends `TimedOut`;
/// - `tags = ["a", "b"]`: Prefect tags (and tag concurrency limits);
/// - `cache_key = path::to::fn`, `persist_result = true`,
///   `cache_expiration = seconds`, `refresh_cache = true`: return an earlier
///   run's stored result for the same key instead of running again.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(task::expand_task, attr, item)
}

/// Turns a function into a flow: each call is a flow run. See `prefecto::flow`.
///
/// Options: `name = "..."` (default: the function's, with `_` as `-`),
/// `max_workers = N` (threads for its sync task bodies).
#[proc_macro_attribute]
pub fn flow(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(flow::expand_flow, attr, item)
}

/// Runs the flow a Prefect worker (or the command line) asks for, among
/// these `#[flow]` functions; returns the program's exit code. See `prefecto::serve`.
#[proc_macro]
pub fn serve(input: TokenStream) -> TokenStream {
    served::expand_serve(input.into())
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// The `prefecto::ServedFlow` of a `#[flow]` function: `served_flow!(path::to::my_flow)`.
#[proc_macro]
pub fn served_flow(input: TokenStream) -> TokenStream {
    served::expand_served_flow(input.into())
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

fn expand(
    f: fn(TokenStream2, TokenStream2) -> syn::Result<TokenStream2>,
    attr: TokenStream,
    item: TokenStream,
) -> TokenStream {
    f(attr.into(), item.into())
        .unwrap_or_else(Error::into_compile_error)
        .into()
}
