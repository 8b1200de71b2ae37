//! The `#[task]` and `#[flow]` attributes of [prefecto](https://docs.rs/prefecto).
//! Use them through `prefecto::prelude::*`; their docs are there.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, Expr, ExprLit, FnArg, GenericArgument, Ident, ItemFn, Lit, LitStr,
    MetaNameValue, Pat, PathArguments, ReturnType, Signature, Token, Type,
};

/// Turns a function into a task. See `prefecto::task::Task`.
///
/// Options: `name = "..."`, `retries = N`, `retry_delay = seconds`,
/// `timeout = seconds`, `tags = ["a", "b"]`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(expand_task, attr, item)
}

/// Turns a function into a flow: each call is a flow run. See `prefecto::flow`.
///
/// Options: `name = "..."`, `max_workers = N`.
#[proc_macro_attribute]
pub fn flow(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(expand_flow, attr, item)
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

/// A parameter: its name and type.
struct Param {
    ident: Ident,
    ty: Type,
}

/// How the body's return value becomes `Result<Output, BodyError>`.
struct Returns {
    output: Type,
    is_result: bool,
}

fn parse_options(attr: TokenStream2) -> syn::Result<Vec<MetaNameValue>> {
    Ok(Punctuated::<MetaNameValue, Token![,]>::parse_terminated
        .parse2(attr)?
        .into_iter()
        .collect())
}

fn option_name(option: &MetaNameValue) -> String {
    option.path.to_token_stream().to_string()
}

fn lit_str(option: &MetaNameValue) -> syn::Result<LitStr> {
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

fn lit_int<N: std::str::FromStr>(option: &MetaNameValue) -> syn::Result<N>
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
fn seconds(option: &MetaNameValue) -> syn::Result<u64> {
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
            ))
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

fn lit_bool(option: &MetaNameValue) -> syn::Result<bool> {
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
fn path_value(option: &MetaNameValue) -> syn::Result<syn::Path> {
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

fn string_list(option: &MetaNameValue) -> syn::Result<Vec<LitStr>> {
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

fn unknown_option(option: &MetaNameValue, known: &str) -> Error {
    Error::new(
        option.path.span(),
        format!(
            "unknown option `{}`; expected one of: {known}",
            option_name(option)
        ),
    )
}

/// Refuses what a task or flow cannot be: methods, generic, const, unsafe or extern functions.
fn check_signature(sig: &Signature, what: &str) -> syn::Result<()> {
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

fn params(sig: &Signature, what: &str) -> syn::Result<Vec<Param>> {
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
fn check_owned(ty: &Type) -> syn::Result<()> {
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
                                return borrowed(l.span())
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
fn returns(output: &ReturnType) -> Returns {
    let ty = match output {
        ReturnType::Default => {
            return Returns {
                output: syn::parse_quote!(()),
                is_result: false,
            }
        }
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    if let Type::Path(path) = &ty {
        if let Some(last) = path.path.segments.last() {
            if last.ident == "Result" {
                if let PathArguments::AngleBracketed(args) = &last.arguments {
                    if let Some(GenericArgument::Type(ok)) = args.args.first() {
                        return Returns {
                            output: ok.clone(),
                            is_result: true,
                        };
                    }
                }
            }
        }
    }
    Returns {
        output: ty,
        is_result: false,
    }
}

fn convert_body_output(returns: &Returns) -> TokenStream2 {
    if returns.is_result {
        quote!(__out.map_err(::prefecto::__private::BodyError::from_display))
    } else {
        quote!(::prefecto::__private::Result::Ok(__out))
    }
}

fn split_doc_attrs(attrs: &[Attribute]) -> (Vec<&Attribute>, Vec<&Attribute>) {
    attrs.iter().partition(|a| a.path().is_ident("doc"))
}

fn expand_task(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    const KNOWN: &str = "name, retries, retry_delay, timeout, tags, cache_key, persist_result, \
                         cache_expiration, refresh_cache";
    let function: ItemFn = syn::parse2(item)?;
    let sig = &function.sig;
    check_signature(sig, "task")?;
    let params = params(sig, "task")?;
    for param in &params {
        check_owned(&param.ty)?;
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        check_owned(ty)?;
    }

    let ident = &sig.ident;
    let mut name = LitStr::new(&ident.to_string(), ident.span());
    let mut retries: u32 = 0;
    let mut retry_delay_ns: u64 = 0;
    let mut timeout = quote!(::std::option::Option::None);
    let mut tags = Vec::new();
    let mut cache_key: Option<syn::Path> = None;
    let mut persist_result = false;
    let mut cache_expiration = quote!(::std::option::Option::None);
    let mut refresh_cache = false;
    for option in parse_options(attr)? {
        match option_name(&option).as_str() {
            "name" => name = lit_str(&option)?,
            "retries" => retries = lit_int(&option)?,
            "retry_delay" => retry_delay_ns = seconds(&option)?,
            "timeout" => {
                let ns = seconds(&option)?;
                if ns == 0 {
                    return Err(Error::new(
                        option.value.span(),
                        "`timeout` must be more than 0 seconds",
                    ));
                }
                timeout = quote!(::std::option::Option::Some(::prefecto::__private::Duration::from_nanos(#ns)));
            }
            "tags" => tags = string_list(&option)?,
            "cache_key" => cache_key = Some(path_value(&option)?),
            "persist_result" => persist_result = lit_bool(&option)?,
            "refresh_cache" => refresh_cache = lit_bool(&option)?,
            "cache_expiration" => {
                let ns = seconds(&option)?;
                cache_expiration = quote!(::std::option::Option::Some(::prefecto::__private::Duration::from_nanos(#ns)));
            }
            _ => return Err(unknown_option(&option, KNOWN)),
        }
    }
    if cache_key.is_some() && !persist_result {
        return Err(Error::new(
            Span::call_site(),
            "`cache_key` needs `persist_result = true`: a cached run returns the stored result \
             of an earlier run, so results must be stored",
        ));
    }

    let vis = &function.vis;
    let (docs, other_attrs) = split_doc_attrs(&function.attrs);
    let task_type = format_ident!("__prefecto_task_{}", ident);
    let asyncness = &sig.asyncness;
    let body_inputs = &sig.inputs;
    let body_output = &sig.output;
    let block = &function.block;
    let idents: Vec<&Ident> = params.iter().map(|p| &p.ident).collect();
    let types: Vec<&Type> = params.iter().map(|p| &p.ty).collect();
    let param_names: Vec<String> = idents.iter().map(|i| i.to_string()).collect();
    let returns = returns(&sig.output);
    let output = &returns.output;
    let convert = convert_body_output(&returns);

    let invoke = if asyncness.is_some() {
        quote! {
            ::prefecto::__private::Invocation::Async(::prefecto::__private::Box::pin(async move {
                let __out = __prefecto_body(#(#idents),*).await;
                #convert
            }))
        }
    } else {
        quote! {
            ::prefecto::__private::Invocation::Sync(::prefecto::__private::Box::new(move || {
                let __out = __prefecto_body(#(#idents),*);
                #convert
            }))
        }
    };
    let call_output = if asyncness.is_some() {
        quote! {
            ::prefecto::__private::Pin<::prefecto::__private::Box<
                dyn ::prefecto::__private::Future<
                    Output = ::prefecto::__private::Result<#output, ::prefecto::__private::TaskRunError>
                > + ::std::marker::Send
            >>
        }
    } else {
        quote!(::prefecto::__private::Result<#output, ::prefecto::__private::TaskRunError>)
    };
    let call = if asyncness.is_some() {
        quote!(::prefecto::__private::call_async)
    } else {
        quote!(::prefecto::__private::call)
    };
    let retry_args = (retries > 0).then(|| {
        let clone_checks = types.iter().map(|ty| {
            quote_spanned! {ty.span()=>
                __prefecto_retries_need_clone_arguments::<#ty>();
            }
        });
        quote! {
            fn retry_args(&self, __args: &Self::Args) -> ::std::option::Option<Self::Args> {
                fn __prefecto_retries_need_clone_arguments<T: ::std::clone::Clone>() {}
                #(#clone_checks)*
                // Retries run the body again with the same arguments, so they must be `Clone`.
                ::std::option::Option::Some(::std::clone::Clone::clone(__args))
            }
        }
    });
    let caching = cache_key.map(|key_fn| {
        quote! {
            fn cache_key(&self, __args: &Self::Args) -> ::std::option::Option<::std::string::String> {
                let (#(#idents,)*) = __args;
                ::std::option::Option::Some(::std::string::ToString::to_string(&#key_fn(#(#idents),*)))
            }
        }
    });
    let persisting = persist_result.then(|| {
        quote_spanned! {output.span()=>
            fn persist(&self, __value: &Self::Output) -> ::std::option::Option<::std::string::String> {
                ::prefecto::__private::serde_json::to_string(__value).ok()
            }
            fn restore(&self, __stored: &str) -> ::std::option::Option<Self::Output> {
                ::prefecto::__private::serde_json::from_str(__stored).ok()
            }
        }
    });
    let caching = quote!(#caching #persisting);
    let is_async = asyncness.is_some();
    let task_doc = format!(
        "The task `{}`: call it to run one task run, or use `submit` and `map`.",
        name.value()
    );

    Ok(quote! {
        #(#docs)*
        #[allow(non_upper_case_globals)]
        #vis const #ident: #task_type = #task_type;

        #[doc = #task_doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        #vis struct #task_type;

        const _: () = {
            #(#other_attrs)*
            #asyncness fn __prefecto_body(#body_inputs) #body_output #block

            static __PREFECTO_SPEC: ::prefecto::__private::TaskSpec = ::prefecto::__private::TaskSpec {
                name: #name,
                param_names: &[#(#param_names),*],
                retries: #retries,
                retry_delay: ::prefecto::__private::Duration::from_nanos(#retry_delay_ns),
                timeout: #timeout,
                tags: &[#(#tags),*],
                cache_expiration: #cache_expiration,
                refresh_cache: #refresh_cache,
                is_async: #is_async,
            };

            impl ::prefecto::__private::Task for #task_type {
                type Args = (#(#types,)*);
                type Output = #output;

                fn spec(&self) -> &'static ::prefecto::__private::TaskSpec {
                    &__PREFECTO_SPEC
                }

                fn invoke(&self, __args: Self::Args) -> ::prefecto::__private::Invocation<Self::Output> {
                    let (#(#idents,)*) = __args;
                    #invoke
                }

                #retry_args
                #caching
            }

            impl #task_type {
                /// Starts one task run in the current flow run.
                pub fn submit(&self, #(#idents: #types),*) -> ::prefecto::__private::PrefectFuture<#output> {
                    ::prefecto::__private::submit(self, (#(#idents,)*))
                }

                /// Starts one task run per input, in input order. Pass one
                /// argument per parameter, as a tuple: an iterable, or `unmapped(value)`.
                pub fn map<__M: ::prefecto::__private::MapArgs<(#(#types,)*)>>(
                    &self,
                    args: __M,
                ) -> ::prefecto::__private::Result<
                    ::prefecto::__private::PrefectFutureList<#output>,
                    ::prefecto::__private::MapError,
                > {
                    ::prefecto::__private::map(self, args)
                }
            }

            fn __prefecto_call(#(#idents: #types),*) -> #call_output {
                #call(&#task_type, (#(#idents,)*))
            }

            static __PREFECTO_CALL: fn(#(#types),*) -> #call_output = __prefecto_call;

            // Calling the task value runs one task run: the call resolves through this deref.
            impl ::std::ops::Deref for #task_type {
                type Target = fn(#(#types),*) -> #call_output;
                fn deref(&self) -> &Self::Target {
                    &__PREFECTO_CALL
                }
            }
        };
    })
}

fn expand_flow(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
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

    Ok(quote! {
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
