//! `#[derive(Module)]` for ferrox-nn: makes a struct of arrays and layers a `ferrox_nn::Module`
//! whose parameters are named by field, so checkpoints, freezing and optimizers see paths like
//! `layers.0.self_attn.q_proj.weight`.
//!
//! See [`macro@Module`] for how fields are read.

#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{parse_macro_input, Data, DeriveInput, Fields, GenericArgument, PathArguments, Type};

/// Derives `ferrox_nn::Module` from a struct's fields (or an enum's variants).
///
/// How a named field is read, by its type as written:
///
/// | field type                  | becomes                                            |
/// |-----------------------------|----------------------------------------------------|
/// | `Array`                     | parameter `name`                                   |
/// | `Option<Array>`             | parameter `name` when `Some`                       |
/// | `Vec<Array>`                | parameters `name.0`, `name.1`, …                   |
/// | `ModuleState`               | the module's state (frozen names, training flag)   |
/// | `Option<M>`                 | submodule `name` when `Some`                       |
/// | `Vec<M>`                    | submodules `name.0`, `name.1`, …                   |
/// | anything else, `M`          | submodule `name` (it must implement `Module`)      |
///
/// `#[module(skip)]` leaves a field out (configuration, caches, plain numbers). A struct with
/// array fields must have a `ModuleState` field, which records which of them are frozen.
///
/// On an enum whose variants each hold one module (`enum AnyLinear { Dense(Linear),
/// Quantized(QLinear) }`) the derive delegates to the variant's module without adding a path
/// component — the way to make a layer replaceable (LoRA, quantization) under a fixed name.
#[proc_macro_derive(Module, attributes(module))]
pub fn derive_module(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let out = match &input.data {
        Data::Struct(s) => derive_struct(&input, &s.fields),
        Data::Enum(e) => derive_enum(&input, e),
        Data::Union(_) => Err(syn::Error::new_spanned(&input.ident, "Module cannot be derived for a union")),
    };
    out.unwrap_or_else(|e| e.to_compile_error()).into()
}

/// What one field contributes.
enum Role {
    Param,
    OptionParam,
    VecParam,
    State,
    Child,
    OptionChild,
    VecChild,
}

/// The last path segment of `ty` and its single generic type argument, if any.
fn outer(ty: &Type) -> Option<(String, Option<&Type>)> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    let arg = match &seg.arguments {
        PathArguments::AngleBracketed(a) if a.args.len() == 1 => match a.args.first() {
            Some(GenericArgument::Type(t)) => Some(t),
            _ => None,
        },
        _ => None,
    };
    Some((seg.ident.to_string(), arg))
}

fn is_array(ty: &Type) -> bool {
    matches!(outer(ty), Some((name, None)) if name == "Array")
}

fn role(ty: &Type) -> Role {
    match outer(ty) {
        Some((name, None)) if name == "Array" => Role::Param,
        Some((name, None)) if name == "ModuleState" => Role::State,
        Some((name, Some(inner))) if name == "Option" => {
            if is_array(inner) {
                Role::OptionParam
            } else {
                Role::OptionChild
            }
        }
        Some((name, Some(inner))) if name == "Vec" => {
            if is_array(inner) {
                Role::VecParam
            } else {
                Role::VecChild
            }
        }
        _ => Role::Child,
    }
}

/// True for `#[module(skip)]`; an error for any other `#[module(...)]` content.
fn skipped(field: &syn::Field) -> syn::Result<bool> {
    let mut skip = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip") {
                skip = true;
                Ok(())
            } else {
                Err(meta.error("unknown module attribute; the one accepted is #[module(skip)]"))
            }
        })?;
    }
    Ok(skip)
}

fn derive_struct(input: &DeriveInput, fields: &Fields) -> syn::Result<Tokens> {
    let named: Vec<&syn::Field> = match fields {
        Fields::Named(named) => named.named.iter().collect(),
        Fields::Unit => Vec::new(),
        Fields::Unnamed(_) => {
            return Err(syn::Error::new_spanned(
                &input.ident,
                "Module can be derived for structs with named fields (or none), not tuple structs",
            ))
        }
    };
    let (mut params, mut params_mut, mut children, mut children_mut) = (vec![], vec![], vec![], vec![]);
    let mut state: Option<&syn::Ident> = None;
    let mut first_param: Option<&syn::Ident> = None;
    for field in named {
        if skipped(field)? {
            continue;
        }
        let id = field.ident.as_ref().expect("named field");
        let name = id.to_string();
        match role(&field.ty) {
            Role::Param => {
                first_param.get_or_insert(id);
                params.push(quote! { out.push((#name.to_string(), &self.#id)); });
                params_mut.push(quote! { out.push((#name.to_string(), &mut self.#id)); });
            }
            Role::OptionParam => {
                first_param.get_or_insert(id);
                params.push(quote! { if let Some(a) = &self.#id { out.push((#name.to_string(), a)); } });
                params_mut.push(quote! { if let Some(a) = &mut self.#id { out.push((#name.to_string(), a)); } });
            }
            Role::VecParam => {
                first_param.get_or_insert(id);
                params.push(quote! {
                    for (i, a) in self.#id.iter().enumerate() { out.push((format!("{}.{}", #name, i), a)); }
                });
                params_mut.push(quote! {
                    for (i, a) in self.#id.iter_mut().enumerate() { out.push((format!("{}.{}", #name, i), a)); }
                });
            }
            Role::State => {
                if state.is_some() {
                    return Err(syn::Error::new_spanned(field, "a Module has at most one ModuleState field"));
                }
                state = Some(id);
            }
            Role::Child => {
                children.push(quote! { out.push((#name.to_string(), &self.#id as &dyn ::ferrox_nn::Module)); });
                children_mut
                    .push(quote! { out.push((#name.to_string(), &mut self.#id as &mut dyn ::ferrox_nn::Module)); });
            }
            Role::OptionChild => {
                children.push(quote! {
                    if let Some(m) = &self.#id { out.push((#name.to_string(), m as &dyn ::ferrox_nn::Module)); }
                });
                children_mut.push(quote! {
                    if let Some(m) = &mut self.#id { out.push((#name.to_string(), m as &mut dyn ::ferrox_nn::Module)); }
                });
            }
            Role::VecChild => {
                children.push(quote! {
                    for (i, m) in self.#id.iter().enumerate() {
                        out.push((format!("{}.{}", #name, i), m as &dyn ::ferrox_nn::Module));
                    }
                });
                children_mut.push(quote! {
                    for (i, m) in self.#id.iter_mut().enumerate() {
                        out.push((format!("{}.{}", #name, i), m as &mut dyn ::ferrox_nn::Module));
                    }
                });
            }
        }
    }
    if let (Some(p), None) = (first_param, state) {
        return Err(syn::Error::new_spanned(
            p,
            "a Module with array parameters needs a `ferrox_nn::ModuleState` field (it records which are frozen)",
        ));
    }
    let (state_ref, state_mut) = match state {
        Some(s) => (quote! { Some(&self.#s) }, quote! { Some(&mut self.#s) }),
        None => (quote! { None }, quote! { None }),
    };
    let ident = &input.ident;
    let (impl_g, ty_g, where_c) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_g ::ferrox_nn::Module for #ident #ty_g #where_c {
            fn own_params(&self) -> Vec<(String, &::ferrox_nn::__derive::Array)> {
                #[allow(unused_mut)]
                let mut out = Vec::new();
                #(#params)*
                out
            }
            fn own_params_mut(&mut self) -> Vec<(String, &mut ::ferrox_nn::__derive::Array)> {
                #[allow(unused_mut)]
                let mut out = Vec::new();
                #(#params_mut)*
                out
            }
            fn children(&self) -> Vec<(String, &dyn ::ferrox_nn::Module)> {
                #[allow(unused_mut)]
                let mut out: Vec<(String, &dyn ::ferrox_nn::Module)> = Vec::new();
                #(#children)*
                out
            }
            fn children_mut(&mut self) -> Vec<(String, &mut dyn ::ferrox_nn::Module)> {
                #[allow(unused_mut)]
                let mut out: Vec<(String, &mut dyn ::ferrox_nn::Module)> = Vec::new();
                #(#children_mut)*
                out
            }
            fn state(&self) -> Option<&::ferrox_nn::ModuleState> {
                #state_ref
            }
            fn state_mut(&mut self) -> Option<&mut ::ferrox_nn::ModuleState> {
                #state_mut
            }
            fn as_dyn(&self) -> &dyn ::ferrox_nn::Module {
                self
            }
            fn as_dyn_mut(&mut self) -> &mut dyn ::ferrox_nn::Module {
                self
            }
        }
    })
}

fn derive_enum(input: &DeriveInput, data: &syn::DataEnum) -> syn::Result<Tokens> {
    let mut arms = Vec::new();
    for v in &data.variants {
        match &v.fields {
            Fields::Unnamed(f) if f.unnamed.len() == 1 => arms.push(&v.ident),
            _ => {
                return Err(syn::Error::new_spanned(
                    v,
                    "each variant of a Module enum must hold exactly one module: `Variant(Layer)`",
                ))
            }
        }
    }
    let ident = &input.ident;
    let (impl_g, ty_g, where_c) = input.generics.split_for_impl();
    let delegate = |method: Tokens, binding: Tokens| {
        let m = format_ident!("m");
        quote! { match *self { #(Self::#arms(#binding #m) => #m.#method,)* } }
    };
    let own = delegate(quote!(own_params()), quote!(ref));
    let own_mut = delegate(quote!(own_params_mut()), quote!(ref mut));
    let ch = delegate(quote!(children()), quote!(ref));
    let ch_mut = delegate(quote!(children_mut()), quote!(ref mut));
    let st = delegate(quote!(state()), quote!(ref));
    let st_mut = delegate(quote!(state_mut()), quote!(ref mut));
    let tn = delegate(quote!(type_name()), quote!(ref));
    Ok(quote! {
        impl #impl_g ::ferrox_nn::Module for #ident #ty_g #where_c {
            fn own_params(&self) -> Vec<(String, &::ferrox_nn::__derive::Array)> { #own }
            fn own_params_mut(&mut self) -> Vec<(String, &mut ::ferrox_nn::__derive::Array)> { #own_mut }
            fn children(&self) -> Vec<(String, &dyn ::ferrox_nn::Module)> { #ch }
            fn children_mut(&mut self) -> Vec<(String, &mut dyn ::ferrox_nn::Module)> { #ch_mut }
            fn state(&self) -> Option<&::ferrox_nn::ModuleState> { #st }
            fn state_mut(&mut self) -> Option<&mut ::ferrox_nn::ModuleState> { #st_mut }
            fn type_name(&self) -> &'static str { #tn }
            fn as_dyn(&self) -> &dyn ::ferrox_nn::Module { self }
            fn as_dyn_mut(&mut self) -> &mut dyn ::ferrox_nn::Module { self }
        }
    })
}
