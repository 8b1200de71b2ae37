//! The deployable side of `#[flow]`: a hidden sibling function that
//! describes the flow and calls it with JSON parameters, and the `serve!`
//! and `served_flow!` macros that name it.

use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, ExprLit, Ident, Lit, LitStr, Meta, Path, Token, Type, Visibility};

/// The name of a flow's hidden sibling: `serve!` derives it from the flow's path.
fn sibling_name(flow: &Ident) -> Ident {
    format_ident!("__prefecto_served_{}", flow)
}

/// The doc comment's text, as a deployment's description.
fn description(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').unwrap_or(&line).to_string())
        .collect();
    lines.join("\n").trim().to_string()
}

pub(crate) struct ServedParts<'a> {
    pub(crate) vis: &'a Visibility,
    pub(crate) ident: &'a Ident,
    pub(crate) attrs: &'a [Attribute],
    pub(crate) name: &'a LitStr,
    pub(crate) is_async: bool,
    pub(crate) idents: &'a [&'a Ident],
    pub(crate) types: &'a [&'a Type],
    pub(crate) names: &'a [String],
}

/// `fn __prefecto_served_<flow>() -> ServedFlow`, beside the flow.
pub(crate) fn sibling(parts: ServedParts<'_>) -> TokenStream2 {
    let ServedParts {
        vis,
        ident,
        attrs,
        name,
        is_async,
        idents,
        types,
        names,
    } = parts;
    let sibling = sibling_name(ident);
    let description = description(attrs);
    let read_args = quote! {
        #(
            let #idents: #types = (&::prefecto::__private::Given::<#types>(
                &__given, #name, #names, ::prefecto::__private::PhantomData,
            )).prefecto_given()?;
        )*
    };
    let call = if is_async {
        quote! {
            ::prefecto::__private::block_on_served(#name, async move {
                #read_args
                let __out = #ident(#(#idents),*).await?;
                ::prefecto::__private::Result::Ok((&::prefecto::__private::Param(&__out)).prefecto_to_json())
            })
        }
    } else {
        quote! {
            #read_args
            let __out = #ident(#(#idents),*)?;
            ::prefecto::__private::Result::Ok((&::prefecto::__private::Param(&__out)).prefecto_to_json())
        }
    };
    quote! {
        #[doc(hidden)]
        #[allow(dead_code, non_snake_case)]
        #vis fn #sibling() -> ::prefecto::ServedFlow {
            #[allow(unused_imports)]
            use ::prefecto::__private::{
                GivenParam as _, GivenParamFallback as _, ParamToJson as _,
                ParamToJsonFallback as _, SchemaOfAny as _, SchemaOfKnown as _,
            };
            ::prefecto::__private::served_flow(
                #name,
                #description,
                ::std::vec![#({
                    let (__schema, __required) =
                        (&::prefecto::__private::SchemaOf::<#types>(::prefecto::__private::PhantomData)).prefecto_schema();
                    ::prefecto::ServedParameter::new(#names, __schema, __required)
                }),*],
                |__given: ::prefecto::__private::JsonMap<::std::string::String, ::prefecto::__private::JsonValue>| {
                    #call
                },
            )
        }
    }
}

/// `served_flow!(path::to::flow)`: the flow's [`ServedFlow`].
pub(crate) fn expand_served_flow(input: TokenStream2) -> syn::Result<TokenStream2> {
    let path: Path = syn::parse2(input)?;
    Ok(sibling_call(path))
}

/// `serve!(flow_a, module::flow_b)`: runs the flow a worker or the command
/// line asks for; the program's exit code.
pub(crate) fn expand_serve(input: TokenStream2) -> syn::Result<TokenStream2> {
    let paths = Punctuated::<Path, Token![,]>::parse_terminated.parse2(input)?;
    if paths.is_empty() {
        return Err(syn::Error::new(
            proc_macro2::Span::call_site(),
            "`serve!` needs at least one #[flow] function: `prefecto::serve!(my_flow)`",
        ));
    }
    let flows = paths.into_iter().map(sibling_call);
    Ok(quote!(::prefecto::serve(::std::vec![#(#flows),*])))
}

fn sibling_call(mut path: Path) -> TokenStream2 {
    if let Some(last) = path.segments.last_mut() {
        last.ident = sibling_name(&last.ident);
    }
    quote!(#path())
}
