//! The options of `#[task(...)]` and `#[flow(...)]`: `name = value` pairs,
//! each read with a clear error for a wrong kind of value.

use proc_macro2::TokenStream as TokenStream2;
use quote::ToTokens;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Error, Expr, ExprLit, Lit, LitStr, MetaNameValue, Token};

pub(crate) fn parse_options(attr: TokenStream2) -> syn::Result<Vec<MetaNameValue>> {
    Ok(Punctuated::<MetaNameValue, Token![,]>::parse_terminated
        .parse2(attr)?
        .into_iter()
        .collect())
}

pub(crate) fn option_name(option: &MetaNameValue) -> String {
    option.path.to_token_stream().to_string()
}

pub(crate) fn lit_str(option: &MetaNameValue) -> syn::Result<LitStr> {
    match &option.value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.clone()),
        other => Err(Error::new(
            other.span(),
            format!(
                "`{}` takes a string, such as `{} = \"my-name\"`",
                option_name(option),
                option_name(option)
            ),
        )),
    }
}

pub(crate) fn lit_int<N: std::str::FromStr>(option: &MetaNameValue) -> syn::Result<N>
where
    N::Err: std::fmt::Display,
{
    match &option.value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse(),
        other => Err(Error::new(
            other.span(),
            format!(
                "`{}` takes a whole number, such as `{} = 3`",
                option_name(option),
                option_name(option)
            ),
        )),
    }
}

/// Seconds, as a whole or decimal number, in nanoseconds.
pub(crate) fn seconds(option: &MetaNameValue) -> syn::Result<u64> {
    let secs: f64 = match &option.value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse()?,
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse()?,
        other => {
            return Err(Error::new(
                other.span(),
                format!(
                    "`{}` takes a number of seconds, such as `{} = 0.5`",
                    option_name(option),
                    option_name(option)
                ),
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(Error::new(
            option.value.span(),
            format!(
                "`{}` must be a non-negative number of seconds",
                option_name(option)
            ),
        ));
    }
    Ok((secs * 1e9).round() as u64)
}

pub(crate) fn lit_bool(option: &MetaNameValue) -> syn::Result<bool> {
    match &option.value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        other => Err(Error::new(
            other.span(),
            format!("`{}` takes `true` or `false`", option_name(option)),
        )),
    }
}

/// A function named by path, as `cache_key = my_key`.
pub(crate) fn path_value(option: &MetaNameValue) -> syn::Result<syn::Path> {
    match &option.value {
        Expr::Path(path) => Ok(path.path.clone()),
        other => Err(Error::new(
            other.span(),
            format!(
                "`{}` takes the name of a function of the task's parameters (by reference) \
                 returning the key, such as `{} = key_of`",
                option_name(option),
                option_name(option)
            ),
        )),
    }
}

pub(crate) fn string_list(option: &MetaNameValue) -> syn::Result<Vec<LitStr>> {
    let not_a_list = || {
        Error::new(
            option.value.span(),
            "`tags` takes a list of strings, such as `tags = [\"db\", \"slow\"]`",
        )
    };
    let Expr::Array(array) = &option.value else {
        return Err(not_a_list());
    };
    array
        .elems
        .iter()
        .map(|e| match e {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Ok(s.clone()),
            _ => Err(not_a_list()),
        })
        .collect()
}

pub(crate) fn unknown_option(option: &MetaNameValue, known: &str) -> Error {
    Error::new(
        option.path.span(),
        format!(
            "unknown option `{}`; expected one of: {known}",
            option_name(option)
        ),
    )
}
