//! The engine's loops that `loadgen gate --instructions` counts under
//! callgrind (see `loadgen/src/callgrind.rs`), in a crate of their own.
//!
//! **Why a crate.** Rust compiles generic code where it is instantiated: a
//! counted loop, its future poller and the engine's `#[inline]` functions
//! it calls were compiled inside the loadgen binary, and how the compiler
//! split that crate into codegen units and inlined across them followed
//! everything else in it. Unrelated code added to loadgen (a function
//! that also calls the engine through `SessionStore`) moved `get`, `peek`
//! and `touch` past the gate's tolerance (`results/README.md`, the
//! `gate.md` row): a verdict that code outside the engine could flip. Here the loops' only neighbours are their own set-up, built in
//! one codegen unit (the workspace's `profile.release.package` entry), so
//! their counts move with this crate and the engine alone.
//!
//! Keep it so: nothing but the counted loops and what they need belongs
//! here, and no other code should call the engine through the functions
//! the loops inline.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::pedantic)]

pub mod oploop;
