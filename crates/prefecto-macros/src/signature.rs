//! What the attributes accept of a function's signature, and how its return
//! value becomes the engine's `Result<Output, BodyError>`.

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, Pat, PathArguments, ReturnType, Signature,
    Type,
};

/// A parameter: its name and type.
pub(crate) struct Param {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// How the body's return value becomes `Result<Output, BodyError>`.
pub(crate) struct Returns {
    pub(crate) output: Type,
    pub(crate) is_result: bool,
}

/// Refuses what a task or flow cannot be: methods, generic, const, unsafe or extern functions.
pub(crate) fn check_signature(sig: &Signature, what: &str) -> syn::Result<()> {
    if let Some(constness) = &sig.constness {
        return Err(Error::new(
            constness.span(),
            format!("#[{what}] cannot be used on a `const fn`"),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(Error::new(
            unsafety.span(),
            format!("#[{what}] cannot be used on an `unsafe fn`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(Error::new(
            abi.span(),
            format!("#[{what}] cannot be used on an `extern fn`"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(Error::new(
            variadic.span(),
            format!("#[{what}] functions cannot be variadic"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(
            sig.generics.span(),
            format!(
                "#[{what}] functions cannot be generic: a {what} has one fixed signature; \
                 write one {what} per concrete type"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn params(sig: &Signature, what: &str) -> syn::Result<Vec<Param>> {
    sig.inputs
        .iter()
        .map(|input| match input {
            FnArg::Receiver(receiver) => Err(Error::new(
                receiver.span(),
                format!("#[{what}] cannot take `self`: write it as a free function"),
            )),
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => Ok(Param {
                    ident: pat.ident.clone(),
                    ty: (*typed.ty).clone(),
                }),
                other => Err(Error::new(
                    other.span(),
                    format!(
                        "#[{what}] parameters must be plain names such as `x: u32`, \
                         not patterns: the names label the parameters in errors and in the run history"
                    ),
                )),
            },
        })
        .collect()
}

/// A task run can outlive its caller, so its arguments must own their data.
pub(crate) fn check_owned(ty: &Type) -> syn::Result<()> {
    let borrowed = |span: Span| {
        Err(Error::new(
            span,
            "#[task] parameters and return types must be owned types: a task run can outlive \
             the code that submitted it, so use e.g. `String` rather than `&str`",
        ))
    };
    match ty {
        Type::Reference(r) => match &r.lifetime {
            Some(l) if l.ident == "static" => check_owned(&r.elem),
            _ => borrowed(r.span()),
        },
        Type::ImplTrait(i) => Err(Error::new(
            i.span(),
            "#[task] parameters and return types cannot be `impl Trait`: a task has one fixed \
             signature; name the concrete type",
        )),
        Type::Paren(p) => check_owned(&p.elem),
        Type::Group(g) => check_owned(&g.elem),
        Type::Array(a) => check_owned(&a.elem),
        Type::Slice(s) => check_owned(&s.elem),
        Type::Tuple(t) => t.elems.iter().try_for_each(check_owned),
        Type::Path(p) => {
            for segment in &p.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        match arg {
                            GenericArgument::Type(t) => check_owned(t)?,
                            GenericArgument::Lifetime(l) if l.ident != "static" => {
                                return borrowed(l.span());
                            }
                            _ => {}
                        }
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `T` and `Result<T, E>` (by the name `Result`, including aliases such as
/// `io::Result<T>`) are the two return shapes.
pub(crate) fn returns(output: &ReturnType) -> Returns {
    let ty = match output {
        ReturnType::Default => {
            return Returns {
                output: syn::parse_quote!(()),
                is_result: false,
            };
        }
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    if let Type::Path(path) = &ty
        && let Some(last) = path.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(args) = &last.arguments
        && let Some(GenericArgument::Type(ok)) = args.args.first()
    {
        return Returns {
            output: ok.clone(),
            is_result: true,
        };
    }
    Returns {
        output: ty,
        is_result: false,
    }
}

pub(crate) fn convert_body_output(returns: &Returns) -> TokenStream2 {
    if returns.is_result {
        // The body's own error is kept for `source()` where it is an error.
        quote!(__out.map_err(|__error| {
            #[allow(unused_imports)]
            use ::prefecto::__private::{ToBodyError as _, ToBodyErrorFallback as _};
            (&::prefecto::__private::BodyErrorOf::new(__error)).prefecto_body_error()
        }))
    } else {
        quote!(::prefecto::__private::Result::Ok(__out))
    }
}

pub(crate) fn split_doc_attrs(attrs: &[Attribute]) -> (Vec<&Attribute>, Vec<&Attribute>) {
    attrs.iter().partition(|a| a.path().is_ident("doc"))
}
