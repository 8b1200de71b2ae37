//! `#[flow]`: each call of the function is a flow run.

use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Error, Ident, ItemFn, LitStr, Type};

use crate::options::{lit_int, lit_str, option_name, parse_options, unknown_option};
use crate::served::{ServedParts, sibling};
use crate::signature::{check_signature, convert_body_output, params, returns};

pub(crate) fn expand_flow(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    const KNOWN: &str = "name, max_workers";
    let function: ItemFn = syn::parse2(item)?;
    let sig = &function.sig;
    check_signature(sig, "flow")?;
    let params = params(sig, "flow")?;

    let ident = &sig.ident;
    let mut name = LitStr::new(&ident.to_string().replace('_', "-"), ident.span());
    let mut max_workers = quote!(::std::option::Option::None);
    for option in parse_options(attr)? {
        match option_name(&option).as_str() {
            "name" => name = lit_str(&option)?,
            "max_workers" => {
                let n: usize = lit_int(&option)?;
                if n == 0 {
                    return Err(Error::new(
                        option.value.span(),
                        "`max_workers` must be at least 1",
                    ));
                }
                max_workers = quote!(::std::option::Option::Some(#n));
            }
            _ => return Err(unknown_option(&option, KNOWN)),
        }
    }

    let vis = &function.vis;
    let attrs = &function.attrs;
    let asyncness = &sig.asyncness;
    let inputs = &sig.inputs;
    let body_output = &sig.output;
    let block = &function.block;
    let idents: Vec<&Ident> = params.iter().map(|p| &p.ident).collect();
    let outer_inputs = params.iter().map(|p| {
        let (ident, ty) = (&p.ident, &p.ty);
        quote!(#ident: #ty)
    });
    let returns = returns(&sig.output);
    let output = &returns.output;
    let convert = convert_body_output(&returns);

    let types: Vec<&Type> = params.iter().map(|p| &p.ty).collect();
    let names: Vec<String> = idents.iter().map(|i| i.to_string()).collect();
    // An adopted flow run (PREFECT__FLOW_RUN_ID) takes its parameters from the
    // server, where their types can be deserialized.
    let adopt = quote! {
        #(
            let #idents: #types = (&::prefecto::__private::Adopt::<#types>(
                __adopted.as_ref(), #names, ::prefecto::__private::PhantomData,
            )).prefecto_adopt(#idents);
        )*
    };
    let run = if asyncness.is_some() {
        quote! {
            ::prefecto::__private::run_async(&__PREFECTO_FLOW, __parameters, move |__adopted: ::std::option::Option<::prefecto::__private::JsonMap<::std::string::String, ::prefecto::__private::JsonValue>>| async move {
                #adopt
                let __out = __prefecto_body(#(#idents),*).await;
                #convert
            }).await
        }
    } else {
        quote! {
            ::prefecto::__private::run_sync(&__PREFECTO_FLOW, __parameters, move |__adopted: ::std::option::Option<::prefecto::__private::JsonMap<::std::string::String, ::prefecto::__private::JsonValue>>| {
                #adopt
                let __out = __prefecto_body(#(#idents),*);
                #convert
            })
        }
    };

    let served = sibling(ServedParts {
        vis,
        ident,
        attrs,
        name: &name,
        is_async: asyncness.is_some(),
        idents: &idents,
        types: &types,
        names: &names,
    });

    Ok(quote! {
        #served

        #(#attrs)*
        #vis #asyncness fn #ident(#(#outer_inputs),*) -> ::prefecto::__private::Result<#output, ::prefecto::FlowRunError> {
            #asyncness fn __prefecto_body(#inputs) #body_output #block

            static __PREFECTO_FLOW: ::prefecto::__private::FlowSpec = ::prefecto::__private::FlowSpec {
                name: #name,
                max_workers: #max_workers,
            };

            #[allow(unused_imports)]
            use ::prefecto::__private::{
                AdoptParam as _, AdoptParamFallback as _, ParamToJson as _, ParamToJsonFallback as _,
            };
            // Shown on the Prefect server: JSON where the type serializes.
            let __parameters: ::std::vec::Vec<(&'static str, ::prefecto::__private::JsonValue)> =
                ::std::vec![#( (#names, (&::prefecto::__private::Param(&#idents)).prefecto_to_json()) ),*];

            #run
        }
    })
}
