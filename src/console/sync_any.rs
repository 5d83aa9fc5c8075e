//! Type-erased views that hydrate synchronously: `.into_sync_any()` is
//! `.into_any()` without the async-hydration code.
//!
//! Since Leptos 0.8.5 every `AnyView` keeps a pointer to
//! `hydrate_async::<T>` for the view type `T` it erases, so the compiler
//! builds an async state machine for every element under every erased view
//! (upstream issues #4852 and #4438; Leptos 0.9 makes it opt-in with a `lazy`
//! feature). This app hydrates with `hydrate_body`, which is synchronous, and
//! has no lazy routes, so that code is never run; measured on this app it was
//! about a sixth of the release WASM.
//!
//! [`SyncHydrated`] wraps a view and forwards everything to it except
//! `hydrate_async`, which keeps the trait's default: hydrate synchronously.
//! Erasing a `SyncHydrated<T>` instead of a `T` stops the async code at that
//! boundary. Use `.into_sync_any()` wherever a view would be erased: match
//! arms, component results, children.

use leptos::prelude::*;
use leptos::tachys::{
    html::attribute::{any_attribute::AnyAttribute, Attribute},
    hydration::Cursor,
    ssr::StreamBuilder,
    view::{add_attr::AddAnyAttr, Position, PositionState, Render, RenderHtml},
};

/// A view whose async hydration is its synchronous hydration.
pub struct SyncHydrated<V>(pub V);

/// `.into_sync_any()`: erase a view's type without its async hydration.
pub trait IntoSyncAny: RenderHtml + Sized + Send {
    fn into_sync_any(self) -> AnyView {
        SyncHydrated(self).into_any()
    }
}

impl<V: RenderHtml + Send> IntoSyncAny for V {}

impl<V: Render> Render for SyncHydrated<V> {
    type State = V::State;

    fn build(self) -> Self::State {
        self.0.build()
    }

    fn rebuild(self, state: &mut Self::State) {
        self.0.rebuild(state)
    }
}

impl<V: AddAnyAttr> AddAnyAttr for SyncHydrated<V> {
    type Output<SomeNewAttr: Attribute> = SyncHydrated<V::Output<SomeNewAttr>>;

    fn add_any_attr<NewAttr: Attribute>(self, attr: NewAttr) -> Self::Output<NewAttr>
    where
        Self::Output<NewAttr>: RenderHtml,
    {
        SyncHydrated(self.0.add_any_attr(attr))
    }
}

impl<V: RenderHtml> RenderHtml for SyncHydrated<V> {
    type AsyncOutput = SyncHydrated<V::AsyncOutput>;
    type Owned = SyncHydrated<V::Owned>;

    const MIN_LENGTH: usize = V::MIN_LENGTH;
    const EXISTS: bool = V::EXISTS;

    fn dry_resolve(&mut self) {
        self.0.dry_resolve();
    }

    async fn resolve(self) -> Self::AsyncOutput {
        SyncHydrated(self.0.resolve().await)
    }

    fn html_len(&self) -> usize {
        self.0.html_len()
    }

    fn to_html_with_buf(
        self,
        buf: &mut String,
        position: &mut Position,
        escape: bool,
        mark_branches: bool,
        extra_attrs: Vec<AnyAttribute>,
    ) {
        self.0
            .to_html_with_buf(buf, position, escape, mark_branches, extra_attrs)
    }

    // Server-side streaming (Suspense, Transition) must reach the inner view.
    fn to_html_async_with_buf<const OUT_OF_ORDER: bool>(
        self,
        buf: &mut StreamBuilder,
        position: &mut Position,
        escape: bool,
        mark_branches: bool,
        extra_attrs: Vec<AnyAttribute>,
    ) where
        Self: Sized,
    {
        self.0.to_html_async_with_buf::<OUT_OF_ORDER>(
            buf,
            position,
            escape,
            mark_branches,
            extra_attrs,
        )
    }

    fn hydrate<const FROM_SERVER: bool>(
        self,
        cursor: &Cursor,
        position: &PositionState,
    ) -> Self::State {
        self.0.hydrate::<FROM_SERVER>(cursor, position)
    }

    // `hydrate_async` is deliberately not forwarded: the trait's default
    // calls `hydrate`, which is the point of this wrapper.

    fn into_owned(self) -> Self::Owned {
        SyncHydrated(self.0.into_owned())
    }
}
