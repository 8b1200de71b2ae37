//! `#[task]`: the function becomes a unit value that implements `Task`,
//! derefs to a function that runs one task run, and has `submit` and `map`.

use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Error, Ident, ItemFn, LitStr, ReturnType, Type};

use crate::options::{
    lit_bool, lit_int, lit_str, option_name, parse_options, path_value, seconds, string_list,
    unknown_option,
};
use crate::signature::{
    check_owned, check_signature, convert_body_output, params, returns, split_doc_attrs,
};

pub(crate) fn expand_task(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
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
    let map_generics: Vec<Ident> = (0..idents.len())
        .map(|i| format_ident!("__PrefectoMapArg{}", i))
        .collect();
    let submit_generics: Vec<Ident> = (0..idents.len())
        .map(|i| format_ident!("__PrefectoInput{}", i))
        .collect();
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
    // The same attempt, run where it is called: no box, no virtual call.
    let direct_call = if asyncness.is_some() {
        quote! {
            fn call_async(
                &self,
                _run: ::prefecto::TaskRunName,
                __args: Self::Args,
            ) -> impl ::prefecto::__private::Future<
                Output = ::std::option::Option<
                    ::prefecto::__private::Result<Self::Output, ::prefecto::__private::BodyError>
                >
            > + ::std::marker::Send {
                let (#(#idents,)*) = __args;
                async move {
                    let __out = __prefecto_body(#(#idents),*).await;
                    ::std::option::Option::Some(#convert)
                }
            }
        }
    } else {
        quote! {
            fn call_sync(
                &self,
                _run: ::prefecto::TaskRunName,
                __args: Self::Args,
            ) -> ::std::option::Option<
                ::prefecto::__private::Result<Self::Output, ::prefecto::__private::BodyError>
            > {
                let (#(#idents,)*) = __args;
                let __out = __prefecto_body(#(#idents),*);
                ::std::option::Option::Some(#convert)
            }
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

                #direct_call

                #retry_args
                #caching
            }

            impl #task_type {
                /// Starts one task run in the current flow run. Each argument
                /// is a value or a `PrefectFuture` of one: the run waits for
                /// the futures' runs (holding no worker) before it starts.
                pub fn submit<#(#submit_generics: ::prefecto::__private::TaskInput<#types>),*>(
                    &self,
                    #(#idents: #submit_generics),*
                ) -> ::prefecto::__private::PrefectFuture<#output> {
                    ::prefecto::__private::submit_with_inputs(
                        self,
                        ::prefecto::__private::IntoRunArgs::into_run_args((
                            #(::prefecto::__private::TaskInput::into_input(#idents),)*
                        )),
                    )
                }

                /// As `submit`, starting only once every run of `wait_for`
                /// has completed (Prefect's `wait_for=`).
                pub fn submit_after<#(#submit_generics: ::prefecto::__private::TaskInput<#types>),*>(
                    &self,
                    wait_for: &[&dyn ::prefecto::__private::Upstream],
                    #(#idents: #submit_generics),*
                ) -> ::prefecto::__private::PrefectFuture<#output> {
                    let args = ::prefecto::__private::IntoRunArgs::into_run_args((
                        #(::prefecto::__private::TaskInput::into_input(#idents),)*
                    ));
                    ::prefecto::__private::submit_with_inputs(self, args.after(wait_for))
                }

                /// Starts one task run per input, in input order: one argument
                /// per parameter, each an iterable of inputs or `unmapped(value)`.
                #[allow(clippy::too_many_arguments)]
                pub fn map<#(#map_generics: ::prefecto::__private::MapArg<#types>),*>(
                    &self,
                    #(#idents: #map_generics),*
                ) -> ::prefecto::__private::Result<
                    ::prefecto::__private::PrefectFutureList<#output>,
                    ::prefecto::__private::MapError,
                > {
                    ::prefecto::__private::map(self, (#(#idents,)*), &[])
                }

                /// As `map`, starting each run only once every run of
                /// `wait_for` has completed (Prefect's `wait_for=`).
                #[allow(clippy::too_many_arguments)]
                pub fn map_after<#(#map_generics: ::prefecto::__private::MapArg<#types>),*>(
                    &self,
                    wait_for: &[&dyn ::prefecto::__private::Upstream],
                    #(#idents: #map_generics),*
                ) -> ::prefecto::__private::Result<
                    ::prefecto::__private::PrefectFutureList<#output>,
                    ::prefecto::__private::MapError,
                > {
                    ::prefecto::__private::map(self, (#(#idents,)*), wait_for)
                }
            }

            fn __prefecto_call(#(#idents: #types),*) -> #call_output {
                #call(&#task_type, (#(#idents,)*), &[])
            }

            impl #task_type {
                /// Runs one task run, as calling the task does, starting it
                /// only once every run of `wait_for` has completed.
                pub fn call_after(
                    &self,
                    wait_for: &[&dyn ::prefecto::__private::Upstream],
                    #(#idents: #types),*
                ) -> #call_output {
                    #call(self, (#(#idents,)*), wait_for)
                }
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
